"""``python -m tollway_conformance.new_plugin NAME --kind guardrail|provider [DEST]``.

Copies a working plugin template — a guardrail evaluator, a provider adapter for an
OpenAI-compatible upstream, or one for an upstream with a wire of its own, each with its tests
and the conformance suites wired in — and renames it after ``NAME``:

=============  ===================================  =========================================
kind           distribution / module                 what you get
=============  ===================================  =========================================
``guardrail``  ``tollway-NAME`` / ``tollway_NAME``   evaluator ``NAME`` blocking listed words
``provider``   ``tollway-provider-NAME`` /           ``type = "NAME"``, OpenAI chat wire,
               ``tollway_provider_NAME``             models ``NAME-*``
``provider-``  ``tollway-provider-NAME`` /           ``type = "NAME"``, its own wire:
``ndjson``     ``tollway_provider_NAME``             ``POST /generate``, JSON-lines streams,
                                                    own errors; a stand-in upstream for tests
=============  ===================================  =========================================

The templates live in ``tollway_conformance/template/`` (``guardrail``: ``block-words``,
``provider``: ``acme``, ``provider-ndjson``: ``acme`` in package ``tollway_provider_acme_wire``);
copying a folder by hand and replacing those names does the same.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

__all__ = ["KINDS", "TEMPLATES", "main", "render"]

TEMPLATES = Path(__file__).resolve().parent / "template"
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
_SKIP = ("__pycache__", ".egg-info", ".pytest_cache")
#: The template kinds, in ``--kind`` order.
KINDS = ("guardrail", "provider", "provider-ndjson")


def _replacements(kind: str, name: str) -> list[tuple[str, str]]:
    snake = name.replace("-", "_")
    camel = "".join(part.capitalize() for part in name.split("-"))
    if kind == "guardrail":
        return [("block_words", snake), ("BlockWords", camel), ("block-words", name)]
    # The provider-ndjson template's package is ``tollway_provider_acme_wire`` (package names
    # are unique across the repository's distributions); rendered, it is the plain name.
    wire = [("provider_acme_wire", f"provider_{snake}"), ("provider-acme-wire", f"provider-{name}")]
    return [*wire, ("provider_acme", f"provider_{snake}"), ("Acme", camel), ("acme", name)]


def _apply(text: str, replacements: list[tuple[str, str]]) -> str:
    for old, new in replacements:
        text = text.replace(old, new)
    return text


def render(kind: str, name: str, dest: Path) -> Path:
    """Copy the ``kind`` template to ``dest``, renamed after ``name``; return ``dest``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if not _NAME.match(name):
        raise ValueError(
            f"{name!r} is not a plugin name: use lower-case letters, digits and single hyphens "
            "(e.g. block-words, acme)"
        )
    if name.startswith("tollway"):
        raise ValueError(f"give the short name ({name.removeprefix('tollway-')!r}), not {name!r}")
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")
    source = TEMPLATES / kind
    replacements = _replacements(kind, name)
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if any(part.endswith(_SKIP) for part in rel.parts):
            continue
        target = dest / _apply(str(rel), replacements)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.write_text(_apply(path.read_text(), replacements))
        except UnicodeDecodeError:
            shutil.copyfile(path, target)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tollway_conformance.new_plugin",
        description="Create a Tollway plugin from a working template.",
    )
    parser.add_argument("name", help="short plugin name, e.g. block-words or acme")
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("dest", nargs="?", help="folder to create (default: the distribution name)")
    args = parser.parse_intermixed_args(argv)
    dist = f"tollway-{args.name}" if args.kind == "guardrail" else f"tollway-provider-{args.name}"
    dest = Path(args.dest or dist)
    try:
        render(args.kind, args.name, dest)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"created {dest} ({dist})")
    print("next:")
    print(f"  cd {dest}")
    print("  pip install -e '.[test]'")
    print(f"  tollway plugins      # lists {dist}, CONFORMANCE declared")
    print("  pytest               # unit tests and the conformance suites")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
