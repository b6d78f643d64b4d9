"""Running qun's deployments for real on a machine without a container engine's daemon: test tools.

``make e2e-compose`` (``compose_e2e``) brings ``deploy/docker-compose.yml`` up under rootful
podman, private to the run, and runs ``tests/e2e`` against it. The pieces are separate so a
harness for another deployment can reuse them: ``shell`` (commands, ports, signals, clean-up),
``podman`` (a podman whose configuration, storage and API service belong to one run),
``images`` (the Debian base image made by debootstrap and cached, the image builds), ``compose``
(the compose model and the host-network override), ``health`` (running health checks podman
does not run by itself, and waiting for a healthy stack) and ``suite`` (the end-to-end suite
against a running gateway).

``make e2e-k8s`` (``k8s_e2e``) plays the rendered Kubernetes manifests with ``podman kube
play`` on the same images: ``k8s_manifests`` (the rendered output transformed into what podman
can play, and checked), ``netns`` (the run's own network namespace and netavark's state),
``probes`` (the kubelet's gRPC probes) and ``replicas`` (calls spread over two replicas, one
killed mid-run); the overlay it renders is ``k8s-e2e/``.
"""
