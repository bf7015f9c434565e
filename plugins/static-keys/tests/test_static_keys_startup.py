"""``tollway serve`` refuses a key list that would silently be wrong: one secret listed twice
(which key answers?), or two keys with one id (they would share rate limits, budgets, spend)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tollway.keys import mint_key
from tollway.testing import free_port


def _serve(tmp_path: Path, keys: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "tollway.toml"
    cfg.write_text(
        '[[providers]]\nname = "a"\ntype = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
        'api_key = "sk-x"\n' + keys
    )
    env = {
        **os.environ,
        "TOLLWAY_DATA_DIR": str(tmp_path / "data"),
        "TOLLWAY_PLUGINS": "tollway-static-keys,tollway-provider-openai",
        "ENVIRONMENT": "local",
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tollway",
            "serve",
            "--config",
            str(cfg),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def _key(secret: str, *, name: str, id: str | None = None) -> str:
    line = f'[[plugin.static-keys.keys]]\nname = "{name}"\nsecret = "{secret}"\n'
    return line + (f'id = "{id}"\n' if id else "")


def test_one_secret_listed_twice_stops_start_up(tmp_path: Path) -> None:
    secret = mint_key("test")
    out = _serve(tmp_path, _key(mint_key("test"), name="a") + _key(secret, name="b") * 2)
    assert out.returncode != 0
    assert "plugin.static-keys.keys[2].secret: the same secret as keys[1]" in out.stderr
    assert secret not in out.stderr  # the secret itself is never printed
    assert "Traceback" not in out.stderr


def test_two_keys_with_one_id_stop_start_up(tmp_path: Path) -> None:
    keys = _key(mint_key("test"), name="a", id="vk_team") + _key(
        mint_key("test"), name="b", id="vk_team"
    )
    out = _serve(tmp_path, keys)
    assert out.returncode != 0
    assert "plugin.static-keys.keys[1].id: 'vk_team' is already the id of keys[0]" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_explicit_id_may_not_take_a_derived_one(tmp_path: Path) -> None:
    """keys[0] without an id gets ``static_0_<last 6 of its prefix>``; a later key that names
    that id is refused as well."""
    first = mint_key("test")
    derived = f"static_0_{first[:18][-6:]}"
    out = _serve(tmp_path, _key(first, name="a") + _key(mint_key("test"), name="b", id=derived))
    assert out.returncode != 0
    assert f"keys[1].id: {derived!r} is already the id of keys[0]" in out.stderr
