"""Schemathesis against the admin API of a real control plane, from the API's own OpenAPI
document: no input may get a 5xx, responses must match the document, and afterwards every
listing still answers (a fuzzed row never breaks ``list``).

Bounded by default (a few cases per operation, fixed seed: the same cases every run). The long
run: ``TOLLWAY_FUZZ_EXAMPLES=2000`` (cases per operation and phase; ~55,000 in all) — see
docs/testing-plugins.md, "Fuzzing".
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from control_plane_helpers import cli_env, pg_url, start_control_plane, stop  # noqa: F401

from tollway.testing import run_schemathesis

TOKEN = "admin-token-for-fuzzing-0123456789"
EXAMPLES = int(os.environ.get("TOLLWAY_FUZZ_EXAMPLES", "0") or 0)
#: A time budget per run, in seconds (schemathesis stops there and reports what it did).
SECONDS = int(os.environ.get("TOLLWAY_FUZZ_SECONDS", "0") or 0) or None
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
LISTINGS = ("/virtual-keys", "/model-providers", "/routing-policies", "/budgets", "/scopes")


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_fuzz_admin_api(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    data_dir = tmp_path / "data"
    env = cli_env(data_dir, TOLLWAY_ADMIN_TOKEN=TOKEN)
    if store == "postgresql":
        env["TOLLWAY_DATABASE_URL"] = request.getfixturevalue("pg_url")
    cp = start_control_plane(data_dir, env=env)
    try:
        result = run_schemathesis(
            f"{cp.url}/api/admin/openapi.json",
            headers={"Authorization": f"Bearer {TOKEN}"},
            checks=CHECKS,
            max_examples=EXAMPLES or (4 if store == "sqlite" else 2),
            # The bounded run skips the coverage phase on PostgreSQL (the SQLite run has it):
            # together they stay within the suite's time budget.
            phases=("examples", "coverage", "fuzzing", "stateful")
            if EXAMPLES or store == "sqlite"
            else ("examples", "fuzzing", "stateful"),
            max_time=SECONDS,
            timeout=6 * 3600,
        )
        print(f"\nadmin API fuzz ({store}): {result.cases} cases in {result.seconds:.0f} s")
        assert result.ok, result.failures()
        assert result.cases > 0, result.output[-2000:]
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for path in LISTINGS:
            response = httpx.get(f"{cp.url}/api/admin{path}", headers=headers, timeout=30)
            assert response.status_code == 200, (path, response.text[:500])
        assert "Traceback" not in cp.logs()
    finally:
        stop(cp.proc)
