"""Schemathesis against the gateway's model routes — ``/v1/chat/completions``,
``/v1/embeddings``, ``/v1/models``, ``/v1/responses`` from the public OpenAI OpenAPI document
(narrowed to those operations: data/openai-model-routes.json, made by narrow_openai_spec.py)
and ``/v1/messages`` from a hand-written Anthropic Messages document — on a real gateway in
front of the provider simulator, with a real key. No input may get a 5xx, and a 200 must match
the document.

Bounded by default (a few cases per operation, fixed seed). The long run:
``TOLLWAY_FUZZ_EXAMPLES=4000`` (cases per operation and phase; ~20,000 or more in all) — see
docs/testing-plugins.md, "Fuzzing".
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tollway.testing import (
    SimulatedGateway,
    default_providers,
    run_schemathesis,
    start_simulated_gateway,
    start_simulator,
)

DATA = Path(__file__).parent / "data"
EXAMPLES = int(os.environ.get("TOLLWAY_FUZZ_EXAMPLES", "0") or 0)
#: A time budget per run, in seconds (schemathesis stops there and reports what it did).
SECONDS = int(os.environ.get("TOLLWAY_FUZZ_SECONDS", "0") or 0) or None
CHECKS = ("not_a_server_error", "response_schema_conformance")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedGateway]:
    sim = start_simulator()
    gw = start_simulated_gateway(
        tmp_path_factory.mktemp("fuzz-gw"), sim, providers=default_providers(sim.url)
    )
    yield gw
    gw.stop_all()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("document", "prefix", "max_examples"),
    [("openai-model-routes.json", "/v1", 10), ("anthropic-messages.json", "", 20)],
)
def test_fuzz_model_routes(
    stack: SimulatedGateway, document: str, prefix: str, max_examples: int
) -> None:
    result = run_schemathesis(
        DATA / document,
        base_url=stack.url + prefix,
        headers={"Authorization": f"Bearer {stack.key}"},
        checks=CHECKS,
        max_examples=EXAMPLES or max_examples,
        # The coverage phase (schemathesis' boundary values: ~10,000 cases for these big
        # schemas, minutes) runs in the long run only.
        phases=("examples", "coverage", "fuzzing") if EXAMPLES else ("examples", "fuzzing"),
        max_time=SECONDS,
        timeout=6 * 3600,
    )
    print(f"\nmodel routes fuzz ({document}): {result.cases} cases in {result.seconds:.0f} s")
    assert result.ok, result.failures()
    assert result.cases > 0, result.output[-2000:]
    assert "Traceback" not in stack.logs()
