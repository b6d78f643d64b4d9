"""Alembic environment of the campaigns database (run by ``python -m services.common.migrations campaigns``)."""

from services.campaigns.models import Base
from services.common.migrations import run_env

run_env(Base.metadata)
