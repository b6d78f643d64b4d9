"""Alembic migrations, one history per service, run as their own step.

``python -m services.common.migrations <service>`` upgrades that service's
database to head (``make up``, the compose one-shot jobs and the tests call
it). A service never creates its tables itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from services.common.processes import SERVICES_WITH_DATABASES
from services.common.settings import database_url


def alembic_config(service: str, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", f"services.{service}:migrations")
    config.attributes["url"] = url
    return config


def upgrade(service: str, url: str, revision: str = "head") -> None:
    """Upgrades synchronously; call it outside a running event loop."""
    command.upgrade(alembic_config(service, url), revision)


def replace_primary_key(table: str, name: str, columns: list[str]) -> None:
    """Gives ``table`` a new primary key of ``columns`` under the same name (on SQLite by copying the table).

    For a migration's ``upgrade``: the key's columns exist already; only their order or set changes.
    """
    if op.get_bind().dialect.name == "sqlite":  # the copied table takes the new key in place of the old
        with op.batch_alter_table(table, recreate="always") as batch:
            batch.create_primary_key(name, columns)
        return
    op.drop_constraint(name, table, type_="primary")
    op.create_primary_key(name, table, columns)


def run_env(metadata: MetaData) -> None:
    """The body of each service's ``migrations/env.py``."""
    from services.common.db import create_engine

    url: str = context.config.attributes["url"]

    def migrate(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()

    async def main() -> None:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(migrate)
                await connection.commit()
        finally:
            await engine.dispose()

    asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Upgrade a service's database to the newest schema.")
    parser.add_argument("service", choices=SERVICES_WITH_DATABASES)
    parser.add_argument("--url", help="database URL (default: from QUN_DATABASE_URL / the data folder)")
    args = parser.parse_args(argv)
    url = args.url or database_url(dict(os.environ), args.service)
    upgrade(args.service, database_url({"QUN_DATABASE_URL": url}, args.service))
    return 0


if __name__ == "__main__":
    sys.exit(main())
