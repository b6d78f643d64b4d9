"""qunctl: run the platform locally and drive the gateway from a terminal."""
