"""Certificates and keys for the local control plane.

Everything is generated fresh per work directory: a throwaway CA signs the API server's
serving certificate and one client certificate per identity. The identities matter because
the API server runs with RBAC: the admin is in ``system:masters``, while the controller
manager and the scheduler authenticate as ``system:kube-controller-manager`` and
``system:kube-scheduler``, whose permissions come from the bootstrap RBAC policy exactly as
in a real cluster.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Long enough for any test session or development cluster, short enough to be obviously
# throwaway.
_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: CertFiles
    serving: CertFiles
    sa_public_key: Path
    sa_private_key: Path
    clients: dict[str, CertFiles]


# Client identities: name -> (common name = user, organizations = groups).
# kwok gets system:masters because it plays the kubelet of many nodes at once and the Node
# authorizer only grants a kubelet its own node.
CLIENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("modelloop-admin", ("system:masters",)),
    "kube-controller-manager": ("system:kube-controller-manager", ()),
    "kube-scheduler": ("system:kube-scheduler", ()),
    "kwok": ("modelloop-kwok", ("system:masters",)),
}


def _key() -> ec.EllipticCurvePrivateKey:
    # ECDSA P-256: as good as RSA here and ~100x faster to generate on a busy 2-core box.
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             ) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # Backdated a little so that clock skew between components never makes it "not yet valid".
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def _issue(
    directory: Path,
    stem: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    subject: x509.Name,
    *,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> CertFiles:
    key = _key()
    builder = _builder(subject, ca_name, key.public_key()).add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    ).add_extension(
        x509.KeyUsage(
            digital_signature=True, key_encipherment=False, content_commitment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False,
        ),
        critical=True,
    ).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    files = CertFiles(cert=directory / f"{stem}.crt", key=directory / f"{stem}.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(files.key, key)
    return files


def create_pki(directory: Path, *, service_ip: str) -> Pki:
    """Write a CA, the API server's serving pair, client pairs and the service-account keys."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name("modelloop-local-ca")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=False, content_commitment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca = CertFiles(cert=directory / "ca.crt", key=directory / "ca.key")
    ca.cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(ca.key, ca_key)

    # The names in-cluster clients use for the API server, plus loopback for us.
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
           "kubernetes.default.svc.cluster.local"]
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", service_ip)]
    serving = _issue(directory, "apiserver", ca_key, ca_name, _name("kube-apiserver"),
                     usage=ExtendedKeyUsageOID.SERVER_AUTH, sans=sans)

    clients = {
        name: _issue(directory, f"client-{name}", ca_key, ca_name, _name(user, groups),
                     usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        for name, (user, groups) in CLIENTS.items()
    }

    # RSA for service-account tokens: RS256 is what every token consumer accepts.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_private = directory / "sa.key"
    _write_key(sa_private, sa_key)
    sa_public = directory / "sa.pub"
    sa_public.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Pki(ca=ca, serving=serving, sa_public_key=sa_public, sa_private_key=sa_private,
               clients=clients)
