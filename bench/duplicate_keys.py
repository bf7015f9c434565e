"""What the duplicate-key check costs per request (tollway._input.duplicate_key).

Times ``orjson.loads`` alone and ``orjson.loads`` + ``duplicate_key`` on the captured Claude Code
and Codex requests (``--captures``, default /work/shared/data/real-client-requests), each in
three spellings:

* ``compact``: as Claude Code (``JSON.stringify``), Codex (serde_json) and the official Python
  SDKs (httpx: ``separators=(",", ":")``, ``ensure_ascii=False``) send it;
* ``spaced``: Python ``json.dumps`` defaults (``", "``, ``": "``, ASCII escapes), as a
  hand-written client might;
* ``newlines``: compact, with every fifth space of every string turned into a newline
  (escaped ``\\n``), like real prompts and code.

The last column is the naive alternative for comparison: the stdlib parser with an
``object_pairs_hook`` on every request, on top of the orjson parse. Best of 15 runs of 300 calls
each, in CPU time of this thread; microseconds per request::

    .venv/bin/python bench/duplicate_keys.py
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
from collections.abc import Callable
from typing import Any

import orjson

from tollway._input import duplicate_key


def _newlines(value: Any) -> Any:
    if isinstance(value, str):
        parts = value.split(" ")
        return "".join(p + ("\n" if i % 5 == 4 else " ") for i, p in enumerate(parts))[:-1]
    if isinstance(value, list):
        return [_newlines(v) for v in value]
    if isinstance(value, dict):
        return {k: _newlines(v) for k, v in value.items()}
    return value


def _hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


def _best(fn: Callable[[], object], n: int = 300, runs: int = 15) -> float:
    fn()
    best = float("inf")
    for _ in range(runs):
        t0 = time.thread_time()  # CPU time: other processes on a shared machine do not count
        for _ in range(n):
            fn()
        best = min(best, (time.thread_time() - t0) / n)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--captures", default="/work/shared/data/real-client-requests")
    args = parser.parse_args()
    print(
        f"{'capture':44} {'spelling':9} {'bytes':>7} {'loads µs':>9} {'+check µs':>10} "
        f"{'%':>5} {'+json hook µs':>14}"
    )
    for path in sorted(glob.glob(os.path.join(args.captures, "*.json"))):
        with open(path) as fh:
            captured = json.load(fh)
        for i, req in enumerate(captured):
            body = req.get("body")
            if not isinstance(body, dict) or len(json.dumps(body)) < 1000:
                continue
            spellings = {
                "compact": json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                "spaced": json.dumps(body),
                "newlines": json.dumps(_newlines(body), separators=(",", ":"), ensure_ascii=False),
            }
            for name, text in spellings.items():
                raw = text.encode()
                parsed = orjson.loads(raw)
                assert duplicate_key(raw, parsed) is None
                base = _best(lambda raw=raw: orjson.loads(raw))
                both = _best(lambda raw=raw: duplicate_key(raw, orjson.loads(raw)))
                naive = _best(lambda raw=raw: json.loads(raw, object_pairs_hook=_hook), n=100)
                label = f"{os.path.basename(path)}[{i}]"
                print(
                    f"{label:44} {name:9} {len(raw):7} {base:9.1f} {both - base:10.1f} "
                    f"{(both - base) / base * 100:5.0f} {naive:14.1f}"
                )


if __name__ == "__main__":
    main()
