"""The environment a stdio MCP server starts with, and ``${VAR}`` references in the
``env`` and ``headers`` of a ``servers_config.json`` entry.

Pure functions of the entry and the platform's environment (no process is started here):
:func:`stdio_environment` says which of the platform's variables a server may see and why,
:func:`expand_env_references` fills in ``${VAR}`` and refuses an unset variable with
:class:`~actors.tools.mcp_client.errors.ServerConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from actors.tools.mcp_client.errors import ServerConfigError
from config.schema import ServerEntry

__all__ = ["expand_env_references", "stdio_cwd", "stdio_environment"]

_SDK_DEFAULT_VARIABLES = frozenset({"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"})
"""What the SDK's ``get_default_environment()`` passes on POSIX."""

_SYSTEM_VARIABLES = frozenset({"TMPDIR", "TZ", "LANG", "LANGUAGE"})
"""Where temporary files go, the local time zone (a time server needs it), the locale."""

_CA_VARIABLES = frozenset(
    {
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "HTTPLIB2_CA_CERTS",
        "GIT_SSL_CAINFO",
    }
)
"""Trust stores: a server behind a TLS-inspecting proxy fails without them."""

_PROXY_VARIABLES = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "FTP_PROXY"})
"""Proxy settings, matched case-insensitively (``https_proxy`` is as common as the upper case)."""

_PREFIXES = ("LC_", "XDG_")
"""Locale categories and the XDG base directories (where ``uvx``/``npx`` keep their caches)."""

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _passed_by_policy(name: str) -> bool:
    upper = name.upper()
    return (
        name in _SDK_DEFAULT_VARIABLES
        or name in _SYSTEM_VARIABLES
        or name in _CA_VARIABLES
        or upper in _PROXY_VARIABLES
        or name.startswith(_PREFIXES)
    )


def expand_env_references(text: str, platform_env: Mapping[str, str], *, field: str) -> str:
    """Replace each ``${VAR}`` in ``text`` by the variable's value in ``platform_env``.

    Only the braced form is a reference: a ``$`` not followed by ``{NAME}`` stays as it is.

    Args:
        text: A value from the configuration.
        platform_env: The platform's environment (``os.environ`` plus ``.env`` files).
        field: Where the value comes from (``env.GITHUB_TOKEN``, ``headers.Authorization``),
            for the error message.

    Raises:
        ServerConfigError: A referenced variable is not set. An unset variable is an error,
            never an empty string: an empty token fails later, far from its cause.
    """

    def substitute(match: re.Match[str]) -> str:
        variable = match.group(1)
        value = platform_env.get(variable)
        if value is None:
            raise ServerConfigError(
                f"{field} references ${{{variable}}}, but {variable} is not set in the "
                "platform's environment (set it, or add it to a .env file)",
                variable=variable,
            )
        return value

    return _REFERENCE.sub(substitute, text)


def stdio_environment(
    entry: ServerEntry, platform_env: Mapping[str, str], *, inherit_env: bool = False
) -> dict[str, str]:
    """The environment a stdio server is started with.

    By default a server gets only what a well-behaved program needs to run, and nothing
    that identifies the platform's own credentials:

    * the SDK's minimal set: ``HOME``, ``LOGNAME``, ``PATH``, ``SHELL``, ``TERM``, ``USER``;
    * ``TMPDIR``, ``TZ``, the locale (``LANG``, ``LANGUAGE``, ``LC_*``) and the XDG base
      directories (``XDG_*``: where ``uvx`` and ``npx`` keep their caches);
    * proxies (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, ``FTP_PROXY``,
      in either case) and trust stores (``SSL_CERT_FILE``, ``SSL_CERT_DIR``,
      ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, ``NODE_EXTRA_CA_CERTS``,
      ``HTTPLIB2_CA_CERTS``, ``GIT_SSL_CAINFO``): without them a server behind a corporate
      proxy or a TLS-inspecting gateway fails in ways that are hard to trace back here;
    * then the entry's ``env``, with ``${VAR}`` references expanded from ``platform_env``.

    Why not everything: an MCP server is third-party code, and the platform's environment
    holds the LLM API keys (``OPENROUTER_API_KEY``...) and whatever else the operator
    exported. A server that needs a secret gets it by name, visibly, in
    ``servers_config.json``: ``"env": {"GITHUB_TOKEN": "${GITHUB_TOKEN}"}``. Package index
    settings (``UV_INDEX_URL``, ``NPM_CONFIG_REGISTRY``) are not passed either: they may
    embed credentials; name them the same way if ``uvx``/``npx`` needs them.

    With ``inherit_env=True`` the server gets the whole ``platform_env`` (API keys included),
    then the entry's ``env`` over it: an explicit, per-server opt-in for servers that expect
    a full login environment. Shell functions exported by bash (values starting with ``()``)
    are never passed, as the SDK does.

    Args:
        entry: The server's configuration.
        platform_env: The platform's environment (normally ``os.environ`` after ``.env``
            files were loaded into it).
        inherit_env: Pass everything instead of the policy above.

    Raises:
        ServerConfigError: The entry's ``env`` references an unset variable.
    """
    environment = {
        name: value
        for name, value in platform_env.items()
        if (inherit_env or _passed_by_policy(name)) and not value.startswith("()")
    }
    for name, value in entry.env.items():
        environment[name] = expand_env_references(value, platform_env, field=f"env.{name}")
    return environment


def stdio_cwd(name: str, entry: ServerEntry, cwd_default: Path) -> Path:
    """The directory a stdio server runs in: the entry's ``cwd`` taken against
    ``cwd_default`` (the config directory), or ``cwd_default`` itself when unset.

    Raises:
        ServerConfigError: That directory does not exist.
    """
    cwd = cwd_default if entry.cwd is None else cwd_default / Path(entry.cwd).expanduser()
    if not cwd.is_dir():
        raise ServerConfigError(
            f"server {name!r}: cwd {str(cwd)!r} is not a directory", server=name
        )
    return cwd
