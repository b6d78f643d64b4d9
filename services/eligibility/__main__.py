"""``python -m services.eligibility``: serve the eligibility service."""

from services.common.server import main
from services.eligibility.app import EligibilityApp

main(EligibilityApp)
