"""A provider credential is checked by its installed adapter on write: what a gateway would
refuse at start-up (or silently never serve) is refused by ``model-providers create/update``."""

from __future__ import annotations

from pathlib import Path

import pytest
from control_plane_helpers import tollway, tollway_json

pytest.importorskip("tollway_provider_bedrock")
pytest.importorskip("tollway_provider_azure")


def test_create_refused_with_the_adapters_reasons(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = tollway(
        data, "model-providers", "create", "--type", "bedrock", "--name", "aws",
        "--api-key", "AKIDEXAMPLE:wJalrXUtnFEMI", check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout
    assert "the bedrock adapter refuses this provider" in proc.stderr
    assert "config.region: missing" in proc.stderr
    assert "wJalrXUtnFEMI" not in proc.stderr  # the secret is never echoed
    assert "Traceback" not in proc.stderr
    assert tollway_json(data, "model-providers", "list") == []

    proc = tollway(
        data, "model-providers", "create", "--type", "azure", "--name", "az",
        "--api-key", "k", "--base-url", "https://example-resource.openai.azure.com",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "deployment" in proc.stderr, proc.stderr


def test_update_checks_the_merged_provider(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = tollway_json(
        data, "model-providers", "create", "--type", "bedrock", "--name", "aws",
        "--api-key", "AKIDEXAMPLE:wJalrXUtnFEMI", "--config-json", '{"region": "us-east-1"}',
    )  # fmt: skip
    assert created["config"] == {"region": "us-east-1"}
    # The stored credential (encrypted at rest) takes part in the check without being re-sent.
    updated = tollway_json(
        data, "model-providers", "update", created["id"], "--config-json",
        '{"region": "eu-west-1"}',
    )  # fmt: skip
    assert updated["config"] == {"region": "eu-west-1"}
    proc = tollway(
        data, "model-providers", "update", created["id"], "--config-json", '{"region": null}',
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "config.region: missing" in proc.stderr, proc.stderr
    proc = tollway(
        data, "model-providers", "update", created["id"], "--api-key", "not-a-key-pair",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "api_key" in proc.stderr, proc.stderr
    (kept,) = tollway_json(data, "model-providers", "list")
    assert kept["config"] == {"region": "eu-west-1"} and kept["revision"] == updated["revision"]


def test_a_provider_its_adapter_accepts_is_created(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = tollway_json(
        data, "model-providers", "create", "--type", "openai", "--name", "oa", "--api-key", "sk-x"
    )  # fmt: skip
    assert created["type"] == "openai"
