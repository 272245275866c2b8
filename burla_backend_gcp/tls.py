"""The cluster's TLS: one CA per cluster (made at install, kept in Secret Manager), and the
certificate each node makes for itself under it, for its own addresses.

Callers get the CA's certificate from the cluster service and check every node against it, so a
node's address is trusted only if the cluster signed a certificate for it. Uses `cryptography`
(the gcp extra), imported here only.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

CA_DAYS = 3650
NODE_DAYS = 30


@dataclass(frozen=True)
class KeyPair:
    cert_pem: str
    key_pem: str

    def __repr__(self) -> str:  # never show the key
        return "KeyPair(cert_pem=..., key_pem=<hidden>)"


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem(cert, key) -> KeyPair:
    from cryptography.hazmat.primitives import serialization

    return KeyPair(
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()).decode(),
    )


def make_ca(cluster: str) -> KeyPair:
    """A new CA for the cluster named `cluster` (the project id)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"burla cluster CA ({cluster})")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _pem(cert, key)


def node_certificate(ca: KeyPair, node_name: str, addresses: list[str]) -> KeyPair:
    """A server certificate for one node, valid for its IP addresses (and `node_name`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    key = _key()
    names: list[x509.GeneralName] = [x509.DNSName(node_name)]
    for address in dict.fromkeys(addresses):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            names.append(x509.DNSName(address))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=NODE_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _pem(cert, key)
