"""How qun is packaged and run outside a laptop: image entry point, compose, Kubernetes, monitoring.

The per-process lists (names, ports, databases) come from the code; ``deploy.render``
writes the compose file, the Kubernetes manifests, the Prometheus scrape config
and the Grafana dashboard from them.
"""
