"""Shared fixtures.

``log_events`` captures the platform's structured log as parsed JSON events (the same
pipeline production uses, written to a buffer instead of stdout), so tests assert on
event names and fields exactly as an operator tailing the log would see them.

``postgres_database`` (one per run) and ``postgres_dsn`` (an empty schema per test) are
the tests' PostgreSQL (``tests/postgres.py``).

The suite runs on two pytest-xdist workers with ``--dist loadgroup`` (pyproject.toml):
tests are handed out one by one, except that the modules of :data:`XDIST_GROUPS` each run
whole on one worker (first, being the largest units), see docs/running.md#tests.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import settings

from actors.logs import configure_logging, set_secrets
from tests import broker
from tests.postgres import create_database, drop_database, with_search_path
from tests.postgres import execute as pg_execute

XDIST_GROUPS: dict[str, str] = {
    # One scenario at a time anyway (a file lock): on two workers, one would wait.
    "tests/integration/test_conformance.py": "conformance",
    # Two or three platform processes starting at once per test: on both workers at the
    # same time they starve each other (and everything else) of the two cores.
    "tests/integration/test_cluster.py": "cluster",
    # Module-scoped servers (node, Python MCP servers over three transports, a built and
    # installed wheel): started once on one worker, not once on each.
    "tests/test_server_everything.py": "server-everything",
    "tests/test_mcp_client.py": "mcp-client",
    "tests/integration/test_installed_tool.py": "installed-tool",
}
"""Test modules whose tests run on one xdist worker, one after another (group name; see
:func:`pytest_xdist_make_scheduler`)."""


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` grouped by :data:`XDIST_GROUPS` (xdist's own groups come from
    ``xdist_group`` marks, which pytest-xdist 3.8 adds to the test ids through an attribute
    pytest 9 no longer has: the marks are silently ignored). Other ``--dist`` modes are
    xdist's."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling  # only the controller needs it

    class ModuleGroups(LoadScopeScheduling):
        """One work unit per test, except one per group (largest units first: xdist's
        ``--loadscope-reorder``, on by default)."""

        def _split_scope(self, nodeid: str) -> str:
            return XDIST_GROUPS.get(nodeid.partition("::")[0], nodeid)

        def remove_node(self, node: Any) -> str | None:
            """xdist's, except that the test a crashed worker was running (e.g. one past
            its timeout: pytest-timeout ends the worker) is reported and not run again; the
            rest of its work goes back in the queue. (LoadScopeScheduling queues the crashed
            test again: a hanging test then ends worker after worker until the run stalls.)"""
            workload = self.assigned_work.pop(node)
            crashitem = next(
                (
                    nodeid
                    for unit in workload.values()
                    for nodeid, completed in unit.items()
                    if not completed
                ),
                None,
            )
            if crashitem is None:
                return None
            workload[self._split_scope(crashitem)][crashitem] = True
            self.workqueue.update(
                (scope, unit) for scope, unit in workload.items() if not all(unit.values())
            )
            for other in self.assigned_work:
                self._reschedule(other)
            return crashitem

    return ModuleGroups(config, log)


STARTS_PROCESSES = frozenset({"platform_factory", "start_platform", "browser"})
"""Fixtures that start a platform process or Chromium: their tests run first."""
FIRST_MODULES = frozenset({"tests/test_inspection.py", "tests/test_migrate.py"})
"""Modules whose tests run first along with those using :data:`STARTS_PROCESSES`: unit-test
modules that start servers through fixtures of their own (the groups of
:data:`XDIST_GROUPS` are handed out first anyway)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start processes first (a stable sort, the same on every worker), so that
    the end of a run is short tests filling both workers rather than one long test."""

    def light(item: pytest.Item) -> bool:
        if item.nodeid.partition("::")[0] in FIRST_MODULES:
            return False
        return STARTS_PROCESSES.isdisjoint(getattr(item, "fixturenames", ()))

    items.sort(key=light)


# No per-example deadline anywhere: the suite runs two workers on a 2-core machine, where an
# example that takes 1 ms alone once took 256 ms; timing is for benchmarks, not tests.
settings.register_profile("platform", deadline=None)
settings.load_profile("platform")


class LogCapture:
    """Parsed JSON log events written while the fixture is active."""

    def __init__(self, buffer: io.StringIO) -> None:
        self.buffer = buffer

    @property
    def text(self) -> str:
        """Everything written, raw."""
        return self.buffer.getvalue()

    def events(self, name: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        """Events (optionally only those named ``name`` whose fields match ``fields``)."""
        parsed = [orjson.loads(line) for line in self.text.splitlines() if line.strip()]
        return [
            e
            for e in parsed
            if (name is None or e.get("event") == name)
            and all(e.get(k) == v for k, v in fields.items())
        ]


@pytest.fixture
def log_events() -> Iterator[LogCapture]:
    """Capture log events at DEBUG level as JSON; restores stdout/INFO afterwards."""
    buffer = io.StringIO()
    configure_logging("DEBUG", "json", stream=buffer)
    try:
        yield LogCapture(buffer)
    finally:
        set_secrets(())
        configure_logging("INFO", "json", stream=None)


@pytest.fixture(scope="session")
def nats_server() -> str:
    """The tests' NATS server's URL (see tests/broker.py); fails, naming what to start,
    when it is not reachable."""
    return broker.nats_url()


@pytest.fixture
def nats_prefix(nats_server: str) -> str:
    """A subject prefix of this test's own."""
    return broker.unique_prefix()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """This test run's own PostgreSQL database (see tests/postgres.py), dropped at the end;
    its DSN. Fails, naming what to start, when the server is not reachable."""
    dsn = create_database()
    try:
        yield dsn
    finally:
        drop_database(dsn)


@pytest.fixture
def postgres_dsn(postgres_database: str) -> Iterator[str]:
    """A DSN whose connections work in a new, empty schema of this run's database (so each
    test starts from an empty database, as with a new SQLite file); dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    pg_execute(postgres_database, f"CREATE SCHEMA {schema}")
    try:
        yield with_search_path(postgres_database, schema)
    finally:
        pg_execute(postgres_database, f"DROP SCHEMA {schema} CASCADE")
