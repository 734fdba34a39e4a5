"""The client command the MCP conformance suite drives (``tests/integration/test_conformance.py``).

Usage (the suite runs it; ``cwd`` must be the repository root)::

    MCP_CONFORMANCE_SCENARIO=tools_call python -m tests.conformance_client http://localhost:PORT/mcp

The suite (``@modelcontextprotocol/conformance``, pinned in ``tests/npm``) starts a test server
for one client scenario, runs this command with the server's URL as the last argument, the
scenario's name in ``MCP_CONFORMANCE_SCENARIO`` and, for some scenarios, test data (client
credentials...) as JSON in ``MCP_CONFORMANCE_CONTEXT``; then it judges what the server saw.

Design note: this is not a client of its own. It turns the URL into a ``servers_config.json``
entry (:class:`config.schema.ServerEntry`) and connects with
:func:`actors.tools.mcp_client.connect_server`, the code path the ToolActor takes, with the
ToolActor's capabilities: an elicitation handler (answered here as a user who accepts the
form without touching it, so the platform's own SEP-1034 default filling,
:func:`actors.tools.elicitation.accepted_content`, decides what goes back) and a sampling
handler (refused, as for an entry without ``allow_sampling``). Then it does what the scenario
expects: list the tools, call the scenario's tool. Exit status 0 on success; on failure one
line naming the error on stderr and status 1. Nothing secret is printed: the suite saves this
command's output in its results.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx2
from mcp import types as mcp_types
from mcp.shared.auth import AuthorizationCodeResult

from actors.tools.elicitation import ElicitationContentInvalid, accepted_content
from actors.tools.mcp_client import (
    MCPClientError,
    MemoryTokenStorage,
    ServerConnection,
    callback_result_from_url,
    connect_server,
    oauth_auth,
)
from config.schema import ServerEntry

__all__ = ["AUTH_TOOL", "SCENARIO_TOOLS", "main"]

CONNECTION_TIMEOUT = 10.0
"""Seconds to connect (the suite gives the whole command 30 s by default)."""

CALL_TIMEOUT = 10.0
"""Seconds a tool call may go without an answer."""

AUTH_TOOL = "test-tool"
"""The one tool of every ``auth/*`` scenario's server."""

SCENARIO_TOOLS: dict[str, tuple[str, dict[str, Any]]] = {
    "tools_call": ("add_numbers", {"a": 5, "b": 3}),
    "elicitation-sep1034-client-defaults": ("test_client_elicitation_defaults", {}),
    "sse-retry": ("test_reconnection", {}),
}
"""Non-auth scenarios that want a tool called: the tool and its arguments. ``initialize``
only wants the handshake (and lists the tools, as the ToolActor does on connecting)."""


class ScenarioError(Exception):
    """The scenario cannot be run as asked (unknown name, missing tool...)."""


async def _elicit(
    context: Any, params: mcp_types.ElicitRequestParams
) -> mcp_types.ElicitResult | mcp_types.ErrorData:
    """A user who accepts the form as shown: the platform fills in the defaults."""
    if isinstance(params, mcp_types.ElicitRequestURLParams):
        return mcp_types.ElicitResult(action="decline")  # as the ToolActor does
    try:
        content = accepted_content(dict(params.requested_schema), {})
    except ElicitationContentInvalid as exc:
        return mcp_types.ErrorData(code=mcp_types.INVALID_PARAMS, message=str(exc))
    return mcp_types.ElicitResult(action="accept", content=content)


async def _sample(
    context: Any, params: mcp_types.CreateMessageRequestParams
) -> mcp_types.CreateMessageResult | mcp_types.ErrorData:
    """Refused, as the ToolActor refuses it for an entry without ``allow_sampling``."""
    return mcp_types.ErrorData(
        code=mcp_types.INVALID_REQUEST, message="sampling is disabled for this server"
    )


def server_entry(scenario: str, url: str, context: dict[str, Any]) -> ServerEntry:
    """The ``servers_config.json`` entry an operator would write for this scenario's server.

    Without an ``oauth`` section (the non-auth scenarios) the entry is what an operator
    writes for any HTTP server: OAuth is then on by default and used only if the server
    asks for it, as in the ToolActor.
    """
    fields: dict[str, Any] = {"url": url}
    if scenario.startswith("auth/"):
        fields["oauth"] = oauth_settings(scenario, context)
    return ServerEntry.model_validate(fields)


CIMD_URL = "https://conformance-test.local/client-metadata.json"
"""The Client ID Metadata Document URL the suite's ``auth/basic-cimd`` expects as client id
(nothing fetches it); with it configured the SDK still registers dynamically where the
authorization server does not support such documents."""

PRIVATE_KEY_VARIABLE = "CONFORMANCE_PRIVATE_KEY"
"""The environment variable the private key travels in (an operator writes ``${VAR}`` in
``servers_config.json`` rather than the PEM itself)."""


def oauth_settings(scenario: str, context: dict[str, Any]) -> dict[str, Any]:
    """The entry's ``oauth`` section for an ``auth/*`` scenario, from the suite's context."""
    if scenario in ("auth/pre-registration", "auth/cross-app-access-complete-flow"):
        # Cross-app access (SEP-990) has no settings of its own: the platform does not
        # support it, and this is the closest an operator can come (a registered client).
        return {"client_id": context["client_id"], "client_secret": context["client_secret"]}
    if scenario == "auth/client-credentials-basic":
        return {
            "grant": "client_credentials",
            "client_id": context["client_id"],
            "client_secret": context["client_secret"],
        }
    if scenario == "auth/client-credentials-jwt":
        return {
            "grant": "client_credentials",
            "client_id": context["client_id"],
            "token_endpoint_auth_method": "private_key_jwt",
            "private_key": "${" + PRIVATE_KEY_VARIABLE + "}",
            "signing_algorithm": context.get("signing_algorithm", "ES256"),
        }
    return {"client_metadata_url": CIMD_URL}


REDIRECT_URI = "http://localhost:3000/callback"
"""Where the mock authorization server redirects to (nothing listens: see :class:`_Browser`)."""


class _Browser:
    """A person who signs in at once: the suite's authorization endpoint redirects straight
    back with a code, so "opening" the URL is one GET whose ``Location`` is the redirect
    back, handed to the flow as the platform's callback page would."""

    def __init__(self) -> None:
        self._result: AuthorizationCodeResult | None = None

    async def open(self, url: str) -> None:
        async with httpx2.AsyncClient(follow_redirects=False, timeout=CONNECTION_TIMEOUT) as http:
            response = await http.get(url)
        location = response.headers.get("location")
        if response.status_code not in (301, 302, 303, 307, 308) or location is None:
            raise ScenarioError(
                f"the authorization endpoint answered HTTP {response.status_code}, no redirect"
            )
        self._result = callback_result_from_url(location)

    async def redirected(self) -> AuthorizationCodeResult:
        result, self._result = self._result, None
        if result is None:
            raise ScenarioError("no redirect back from the authorization endpoint")
        return result


async def run(scenario: str, url: str, context: dict[str, Any]) -> None:
    """Connect to ``url`` as the platform does and do what ``scenario`` expects."""
    entry = server_entry(scenario, url, context)
    platform_env = dict(os.environ)
    if "private_key_pem" in context:
        platform_env[PRIVATE_KEY_VARIABLE] = context["private_key_pem"]
    browser = _Browser()
    auth = oauth_auth(
        "conformance",
        entry,
        MemoryTokenStorage(),
        platform_env=platform_env,
        redirect_uri=REDIRECT_URI,
        redirect_handler=browser.open,
        callback_handler=browser.redirected,
    )
    async with connect_server(
        "conformance",
        entry,
        platform_env=platform_env,
        connection_timeout=CONNECTION_TIMEOUT,
        cwd_default=Path.cwd(),
        elicitation_callback=_elicit,
        sampling_callback=_sample,
        auth=auth,
        interactive="always",
    ) as conn:
        tools = {tool.name for tool in await conn.list_tools()}
        if scenario.startswith("auth/"):
            if AUTH_TOOL in tools:
                await _call(conn, AUTH_TOOL, {})
            return
        if scenario == "initialize":
            return
        if scenario not in SCENARIO_TOOLS:
            raise ScenarioError(f"unknown scenario {scenario!r}")
        tool, arguments = SCENARIO_TOOLS[scenario]
        if tool not in tools:
            raise ScenarioError(f"the server has no tool {tool!r} (it has {sorted(tools)})")
        await _call(conn, tool, arguments)


async def _call(conn: ServerConnection, tool: str, arguments: dict[str, Any]) -> None:
    result = await conn.call_tool(tool, arguments, timeout=CALL_TIMEOUT)
    if result.is_error:
        raise ScenarioError(f"tool {tool!r} failed: {result.text[:200]}")


def main(argv: list[str] | None = None) -> int:
    """Run the scenario named by the environment against the URL in ``argv``."""
    args = sys.argv[1:] if argv is None else argv
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO")
    if len(args) != 1 or not scenario:
        sys.stderr.write(
            "usage: MCP_CONFORMANCE_SCENARIO=NAME python -m tests.conformance_client URL\n"
        )
        return 2
    raw_context = os.environ.get("MCP_CONFORMANCE_CONTEXT")
    context: dict[str, Any] = json.loads(raw_context) if raw_context else {}
    try:
        asyncio.run(run(scenario, args[0], context))
    except (MCPClientError, ScenarioError, ValueError) as exc:
        sys.stderr.write(f"conformance client: {type(exc).__name__}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
