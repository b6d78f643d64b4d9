"""``python -m services.groups``: serve the groups service (settings from the environment)."""

from services.common.server import main
from services.groups.app import GroupsApp

main(GroupsApp)
