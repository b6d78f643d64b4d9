"""Gateway ↔ backend traffic over TLS with client certificates, when the environment names the files.

``QUN_TLS_CERT_FILE``, ``QUN_TLS_KEY_FILE`` and ``QUN_TLS_CA_FILE`` (all three
or none): each backend then serves its gRPC port over TLS and requires a
client certificate signed by that CA, and the gateway (and the health check)
presents its own. The internal credential (``x-qun-internal-token``) is still
required on top: TLS proves which process is calling, and encrypts the way.
``QUN_TLS_SERVER_NAME`` names the host the backends' certificate is for when
the address the gateway dials is not it (a list of replicas, an IP).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

CERT_ENV, KEY_ENV, CA_ENV = "QUN_TLS_CERT_FILE", "QUN_TLS_KEY_FILE", "QUN_TLS_CA_FILE"
SERVER_NAME_ENV = "QUN_TLS_SERVER_NAME"


class TlsError(ValueError):
    """The TLS files are not all named, or cannot be read."""


@dataclass(frozen=True)
class TlsFiles:
    cert: bytes
    key: bytes
    ca: bytes
    server_name: str = ""

    def server_credentials(self) -> grpc.ServerCredentials:
        """A backend's port: its certificate, and callers must present one the CA signed."""
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """A caller's side: trust the CA, present this process's certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    def channel_options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def tls_from_env(env: dict[str, str]) -> TlsFiles | None:
    """The files the environment names, read; None when it names none."""
    paths = {name: env.get(name, "") for name in (CERT_ENV, KEY_ENV, CA_ENV)}
    if not any(paths.values()):
        return None
    missing = [name for name, path in paths.items() if not path]
    if missing:
        raise TlsError(f"TLS needs {CERT_ENV}, {KEY_ENV} and {CA_ENV} together; missing {', '.join(missing)}")
    try:
        cert, key, ca = (Path(paths[name]).read_bytes() for name in (CERT_ENV, KEY_ENV, CA_ENV))
    except OSError as error:
        raise TlsError(f"cannot read a TLS file: {error}") from error
    return TlsFiles(cert, key, ca, env.get(SERVER_NAME_ENV, ""))
