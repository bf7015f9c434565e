"""Test helpers: a throwaway service account whose token endpoint is the provider simulator."""

from __future__ import annotations

import json

__all__ = ["service_account_json"]


def service_account_json(
    token_uri: str,
    client_email: str = "tollway-test@tollway-test.iam.gserviceaccount.com",
    project: str = "tollway-test",
) -> str:
    """The text of a service-account JSON key with a fresh 2048-bit RSA key (needs
    ``cryptography``), pointing at ``token_uri`` (e.g. the simulator's ``/token``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": project,
            "private_key_id": "0" * 40,
            "private_key": pem,
            "client_email": client_email,
            "client_id": "1" * 21,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        }
    )
