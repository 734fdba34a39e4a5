"""The client-credentials grants' providers (``oauth.grant: client_credentials``).

Apart from ``oauth.py`` because the SDK's client-credentials module imports PyJWT (~30 ms of
CPU): :func:`~actors.tools.mcp_client.oauth.oauth_auth` imports this module only for a
server configured with that grant, so a start without one never loads it.
"""

from __future__ import annotations

from mcp.client.auth.extensions.client_credentials import (
    ClientCredentialsOAuthProvider,
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
)

from actors.tools.mcp_client.oauth import _Hooks

__all__ = ["ClientCredentials", "PrivateKeyJWT", "SignedJWTParameters"]


class ClientCredentials(_Hooks, ClientCredentialsOAuthProvider):
    """Client credentials with a secret, with the platform's hooks."""


class PrivateKeyJWT(_Hooks, PrivateKeyJWTOAuthProvider):
    """Client credentials with a private-key JWT assertion, with the platform's hooks."""
