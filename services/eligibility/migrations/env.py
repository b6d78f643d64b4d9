"""Alembic environment of the eligibility service (see ``services.common.migrations``)."""

from services.common.migrations import run_env
from services.eligibility.models import Base

run_env(Base.metadata)
