from gateway.app import GatewayApp
from services.common.server import main

main(GatewayApp)
