"""``python -m services.push``: serve the push service and run its dispatcher."""

from services.common.server import main
from services.push.app import PushApp

main(PushApp)
