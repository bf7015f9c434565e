"""The three gateway secrets (SPEC §3): all or none.

``LW_VIRTUAL_KEY_PEPPER`` (hashes virtual keys), ``LW_GATEWAY_INTERNAL_SECRET`` (signs the
internal protocol), ``LW_GATEWAY_JWT_SECRET`` (signs the gateway's JWTs). A partial set refuses
to start with one message naming the missing ones. None set on the embedded default: generated
once into the data dir (mode 0600) so keys survive restarts.
"""

from __future__ import annotations

import os
import secrets as _random
from collections.abc import Mapping
from pathlib import Path

import attrs
import orjson

__all__ = ["NAMES", "GatewaySecrets", "SecretsError", "load_gateway_secrets"]

NAMES = ("LW_VIRTUAL_KEY_PEPPER", "LW_GATEWAY_INTERNAL_SECRET", "LW_GATEWAY_JWT_SECRET")
_FILE = "gateway-secrets.json"


class SecretsError(Exception):
    """The secrets are partially configured (or the generated file is unreadable)."""


@attrs.frozen
class GatewaySecrets:
    pepper: bytes = attrs.field(repr=False)
    internal: bytes = attrs.field(repr=False)
    jwt: bytes = attrs.field(repr=False)
    #: ``env`` or ``generated``.
    source: str = "env"


def load_gateway_secrets(
    data_dir: str | os.PathLike[str], env: Mapping[str, str] | None = None, *, generate: bool = True
) -> GatewaySecrets:
    """The secrets from the environment, else from (or into) the data dir's secrets file."""
    env = os.environ if env is None else env
    values = {name: env.get(name, "") for name in NAMES}
    present = [n for n, v in values.items() if v]
    if present and len(present) != len(NAMES):
        missing = [n for n in NAMES if n not in present]
        raise SecretsError(
            "AI Gateway secrets are partially configured: "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing while "
            f"{', '.join(present)} {'is' if len(present) == 1 else 'are'} set. Set all three "
            "(the same values on every gateway and control plane) or none (embedded default)."
        )
    if present:
        return _make(values, "env")
    path = Path(data_dir) / _FILE
    if path.exists():
        try:
            data = orjson.loads(path.read_bytes())
            return _make(data, "generated")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise SecretsError(f"{path} is unreadable ({exc}); restore it or remove it") from None
    if not generate:
        raise SecretsError(f"no gateway secrets in the environment and no {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {n: _random.token_urlsafe(32) for n in NAMES}
    # Write a private temp file, then link it into place: two processes starting on a fresh
    # data dir at once both end up with the one file that won (never a half-written one).
    tmp = path.with_name(f".{_FILE}.{os.getpid()}.{_random.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(orjson.dumps(data))
    try:
        os.link(tmp, path)
    except FileExistsError:
        return load_gateway_secrets(data_dir, env, generate=False)
    finally:
        tmp.unlink()
    return _make(data, "generated")


def _make(values: Mapping[str, str], source: str) -> GatewaySecrets:
    pepper, internal, jwt = (str(values[n]).encode() for n in NAMES)
    return GatewaySecrets(pepper=pepper, internal=internal, jwt=jwt, source=source)
