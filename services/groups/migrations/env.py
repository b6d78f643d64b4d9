"""Alembic environment of the groups database (run by ``python -m services.common.migrations groups``)."""

from services.common.migrations import run_env
from services.groups.models import Base

run_env(Base.metadata)
