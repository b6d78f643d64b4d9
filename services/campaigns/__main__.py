"""``python -m services.campaigns``: serve the campaigns service (settings from the environment)."""

from services.campaigns.app import CampaignsApp
from services.common.server import main

main(CampaignsApp)
