"""``python -m tollway_simulator``: the same command as ``tollway simulate``."""

from __future__ import annotations

from tollway_simulator.cli import simulate

if __name__ == "__main__":
    simulate.main(prog_name="python -m tollway_simulator")
