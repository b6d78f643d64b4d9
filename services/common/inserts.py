"""The INSERT whose ``ON CONFLICT`` clause fits the database: PostgreSQL's or SQLite's.

Upserts and insert-if-absent claims (``on_conflict_do_nothing``,
``on_conflict_do_update``, ``excluded``) exist only on the dialects' own
``insert`` constructs; both render the same SQL shape, so repositories write
each statement once and pick the construct by the session's dialect.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect


def dialect_insert(dialect: Dialect, table: Any) -> Any:
    """``INSERT INTO table`` with the dialect's ``on_conflict_*`` methods (PostgreSQL, else SQLite)."""
    if dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
