"""Alembic environment of the push database (run by ``python -m services.common.migrations push``)."""

from services.common.migrations import run_env
from services.push.models import Base

run_env(Base.metadata)
