"""A throwaway certificate authority and loopback server certificate (trustme) for the fake Azure.

The SDKs talk to the fake over real HTTPS and trust it only through ``REQUESTS_CA_BUNDLE``,
so production code needs no switch to turn certificate checks off.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TlsMaterial:
    """Paths of the PEM files written by :func:`write_tls_material`."""

    ca_path: Path
    cert_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        """An SSL context that serves the generated server certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certfile=str(self.cert_path), keyfile=str(self.key_path))
        return context


def write_tls_material(directory: Path) -> TlsMaterial:
    """Write a fresh CA and a server certificate for 127.0.0.1, ::1 and localhost to ``directory``.

    EC keys keep generation in the low milliseconds: every server start gets its own CA.
    """
    authority = trustme.CA(key_type=trustme.KeyType.ECDSA, organization_name="Sandbox Fake Azure")
    leaf = authority.issue_cert("localhost", "127.0.0.1", "::1", key_type=trustme.KeyType.ECDSA)
    directory.mkdir(parents=True, exist_ok=True)
    material = TlsMaterial(
        ca_path=directory / "fake-azure-ca.pem",
        cert_path=directory / "fake-azure-server.pem",
        key_path=directory / "fake-azure-server.key",
    )
    authority.cert_pem.write_to_path(str(material.ca_path))
    leaf.cert_chain_pems[0].write_to_path(str(material.cert_path))
    leaf.private_key_pem.write_to_path(str(material.key_path))
    material.key_path.chmod(0o600)
    return material
