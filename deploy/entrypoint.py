"""The image's entry point: ``python -m deploy.entrypoint <command>``.

    <process>                   serve one process: gateway, eligibility, groups … (every name
                                ``make up`` runs); settings from the environment
    migrate <service>           upgrade that service's database to the newest schema, then exit
    wait-migrated <service>     wait until that database is at the newest schema (Kubernetes
                                init container: pods start only after the migration Job ran)
    qunctl …                    the command-line client, for ops inside the cluster

The command runs in this same Python process (no shell, no child process), so
with the image's exec-form ENTRYPOINT the service is PID 1 and receives
SIGTERM itself: it reports NOT_SERVING, drains for QUN_GRACE_SECONDS and exits.
"""

from __future__ import annotations

import asyncio
import os
import runpy
import sys
import time

from services.common.processes import MODULES, SERVICES_WITH_DATABASES

USAGE = __doc__ or ""
WAIT_TIMEOUT_SECONDS = 300.0
WAIT_POLL_SECONDS = 2.0


def resolve(argv: list[str]) -> tuple[str, list[str]]:
    """The module to run as ``__main__`` and its argv; raises SystemExit(2) on a bad command."""
    if not argv:
        raise SystemExit(USAGE)
    command, rest = argv[0], argv[1:]
    if command in MODULES:
        if rest:
            raise SystemExit(f"{command} takes no arguments; it reads its settings from the environment")
        return MODULES[command], [command]
    if command == "migrate":
        _one_service(command, rest)
        return "services.common.migrations", ["migrate", *rest]
    if command == "wait-migrated":
        _one_service(command, rest)
        return "deploy.entrypoint", ["wait-migrated", *rest]
    if command == "qunctl":
        return "cli", ["qunctl", *rest]
    known = ", ".join([*MODULES, "migrate", "wait-migrated", "qunctl"])
    raise SystemExit(f"unknown command {command!r}; expected one of {known}")


def _one_service(command: str, rest: list[str]) -> None:
    if len(rest) != 1 or rest[0] not in SERVICES_WITH_DATABASES:
        raise SystemExit(f"usage: {command} <{'|'.join(SERVICES_WITH_DATABASES)}>")


async def _schema_state(service: str, url: str) -> tuple[set[str], set[str]]:
    """(current revisions in the database, head revisions of the service's migrations)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from services.common.db import create_engine
    from services.common.migrations import alembic_config

    heads = set(ScriptDirectory.from_config(alembic_config(service, url)).get_heads())
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            current = await connection.run_sync(lambda sync: set(MigrationContext.configure(sync).get_current_heads()))
    finally:
        await engine.dispose()
    return current, heads


def wait_migrated(service: str, env: dict[str, str] | None = None, timeout: float = WAIT_TIMEOUT_SECONDS) -> int:
    """0 once the service's database is at head; 1 after ``timeout`` seconds without it."""
    from services.common.settings import database_url

    url = database_url(dict(os.environ) if env is None else env, service)
    deadline = time.monotonic() + timeout
    while True:
        try:
            current, heads = asyncio.run(_schema_state(service, url))
            if current == heads:
                print(f"{service}: database at {', '.join(sorted(heads))}", flush=True)
                return 0
            state = f"at {', '.join(sorted(current)) or 'no revision'}, want {', '.join(sorted(heads))}"
        except Exception as error:  # noqa: BLE001 - unreachable database: keep waiting
            state = f"unreachable ({type(error).__name__}: {error})"
        if time.monotonic() >= deadline:
            print(f"{service}: database not migrated after {timeout:.0f}s: {state}", file=sys.stderr, flush=True)
            return 1
        print(f"{service}: waiting for the migration job: {state}", flush=True)
        time.sleep(WAIT_POLL_SECONDS)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-h"], ["--help"], ["help"]):
        print(USAGE)
        return
    module, module_argv = resolve(args)
    if module == "deploy.entrypoint":
        timeout = float(os.environ.get("QUN_MIGRATION_WAIT_SECONDS", WAIT_TIMEOUT_SECONDS))
        raise SystemExit(wait_migrated(module_argv[1], timeout=timeout))
    if module == "services.common.migrations":
        from services.common import migrations

        raise SystemExit(migrations.main(module_argv[1:]))
    sys.argv = module_argv
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
