"""Narrow the public OpenAI OpenAPI spec to the operations the gateway serves.

    python tests/fuzz/narrow_openai_spec.py path/to/openai-openapi.yaml

writes ``tests/fuzz/data/openai-model-routes.json``: ``POST /chat/completions``, ``POST
/embeddings``, ``GET /models`` and ``POST /responses`` with every component they reference
(nothing else), for the schemathesis run in ``test_fuzz_model_routes.py``. ``discriminator``
objects without a ``mapping`` are dropped (their ``oneOf`` still does the work; without a mapping
tools resolve the discriminator value as a schema name and fail).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

OPERATIONS = {
    "/chat/completions": "post",
    "/embeddings": "post",
    "/models": "get",
    "/responses": "post",
}
OUT = Path(__file__).parent / "data" / "openai-model-routes.json"


def refs(node: Any) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/"):
                found.add(ref)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def strip_discriminators(node: Any) -> Any:
    if isinstance(node, dict):
        disc = node.get("discriminator")
        out = {
            k: strip_discriminators(v)
            for k, v in node.items()
            if not (k == "discriminator" and isinstance(disc, dict) and "mapping" not in disc)
        }
        return out
    if isinstance(node, list):
        return [strip_discriminators(v) for v in node]
    return node


def narrow(spec: dict[str, Any]) -> dict[str, Any]:
    paths = {}
    for path, method in OPERATIONS.items():
        op = dict(spec["paths"][path][method])
        op.pop("x-oaiMeta", None)
        paths[path] = {method: op}
    components: dict[str, dict[str, Any]] = {}
    todo = refs(paths)
    seen: set[str] = set()
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, _, section, name = ref.split("/", 3)
        value = spec["components"][section][name]
        components.setdefault(section, {})[name] = value
        todo |= refs(value)
    security = spec.get("components", {}).get("securitySchemes", {})
    components["securitySchemes"] = security
    return strip_discriminators(
        {
            "openapi": spec["openapi"],
            "info": {
                **spec["info"],
                "description": "The OpenAI API (MIT licence), narrowed by "
                "tests/fuzz/narrow_openai_spec.py to the operations Tollway serves.",
            },
            "servers": spec.get("servers", []),
            "security": spec.get("security", []),
            "paths": paths,
            "components": {k: dict(sorted(v.items())) for k, v in sorted(components.items())},
        }
    )


def main() -> None:
    with open(sys.argv[1], "rb") as fh:
        spec = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    OUT.write_text(json.dumps(narrow(spec), indent=1, sort_keys=False) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
