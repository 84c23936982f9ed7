"""The local stack's development CA and one certificate per workload identity.

What cert-manager (or SPIRE) does in Kubernetes, done here with `cryptography`: a CA, and for
each identity a key and a certificate whose URI SAN is its SPIFFE ID
(`spiffe://<trust domain>/ns/promo/sa/<identity>`), with `localhost`, `127.0.0.1` and the
identity's own name as server names, valid for both TLS server and client use (every service is
both). Files are created once and reused by later runs on the same state folder; `reissue`
writes a fresh certificate in place, as a rotation would.

One folder per thing a workload may be given, so that a container mounts exactly its own
(deploy/compose/compose.yaml mounts folders, never single files: a file bind mount pins the
inode and a certificate replaced by rename would never be seen):

    <pki>/ca/ca.crt, ca.key           the issuer: never mounted anywhere
    <pki>/trust/ca.crt                the trust bundle every workload verifies peers with
    <pki>/<identity>/tls.crt, tls.key one workload's certificate and key (cert-manager's names)
    <pki>/jwks/jwks.json              the public keys that verify user tokens
    <pki>/user-token-signing/signing-key.pem   the key users alone signs user tokens with

These are development secrets: the keys are written 0600 in 0700 folders, never printed.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import threading
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from promo_libs.config import TlsPaths
from promo_libs.grpc.client import secure_channel
from promo_libs.user_tokens import public_jwk

TRUST_DOMAIN = "promo.local"
NAMESPACE = "promo"
_CA_DAYS = 365
_LEAF_DAYS = 30


# The people's identities, issued at stack start so grpcurl users find them (README).
CALLER_IDENTITIES = ("back-office", "storefront", "operator")
# Folders of the layout that are not an identity's (no identity may take these names).
CA_FOLDER, TRUST_FOLDER, JWKS_FOLDER, SIGNING_FOLDER = "ca", "trust", "jwks", "user-token-signing"
RESERVED = frozenset({CA_FOLDER, TRUST_FOLDER, JWKS_FOLDER, SIGNING_FOLDER})
# File names inside the folders: cert-manager's, so compose and Kubernetes read the same names.
CERT_NAME, KEY_NAME, BUNDLE_NAME = "tls.crt", "tls.key", "ca.crt"
JWKS_NAME, SIGNING_KEY_NAME = "jwks.json", "signing-key.pem"


def tls_env(files: TlsPaths) -> dict[str, str]:
    """The variables a service reads its files from (promo_libs.config.ServiceSettings)."""
    return {
        "GRPC_TLS_CERT_FILE": str(files.cert),
        "GRPC_TLS_KEY_FILE": str(files.key),
        "GRPC_TLS_CA_FILE": str(files.ca),
    }


def spiffe_id(identity: str, trust_domain: str = TRUST_DOMAIN) -> str:
    return f"spiffe://{trust_domain}/ns/{NAMESPACE}/sa/{identity}"


class DevPki:
    """A development CA in `folder`, issuing per-identity certificates on demand."""

    def __init__(self, folder: Path, trust_domain: str = TRUST_DOMAIN) -> None:
        self.folder = folder
        self.trust_domain = trust_domain
        self._lock = threading.Lock()

    @property
    def ca_file(self) -> Path:
        """The trust bundle (what a workload is given), not the issuer's own files."""
        return self.folder / TRUST_FOLDER / BUNDLE_NAME

    def identity_folder(self, identity: str) -> Path:
        """The one folder holding `identity`'s certificate and key (what its container mounts)."""
        if identity in RESERVED or not identity or "/" in identity or identity.startswith("."):
            raise ValueError(f"not an identity name: {identity!r}")
        return self.folder / identity

    def secret_files(self) -> list[Path]:
        """Every private key under this folder: the issuer's, each identity's, the signer's."""
        keys = [*self.folder.glob(f"*/{KEY_NAME}"), self.folder / CA_FOLDER / "ca.key"]
        keys.append(self.folder / SIGNING_FOLDER / SIGNING_KEY_NAME)
        return sorted(key for key in keys if key.exists())

    def earlier_layout_files(self) -> list[Path]:
        """Keys and certificates a devstack before the per-identity folders wrote directly in
        the PKI folder (compose mounted it whole): unused, reported so they get removed."""
        if not self.folder.is_dir():
            return []
        suffixes = (".pem", ".key", ".json")
        return sorted(p for p in self.folder.iterdir() if p.is_file() and p.suffix in suffixes)

    def files(self, identity: str) -> TlsPaths:
        """The identity's files, issued now if they do not exist yet."""
        with self._lock:
            ca_cert, ca_key = self._ca()
            files = self._paths(identity)
            if not (files.cert.exists() and files.key.exists()):
                self._issue(identity, ca_cert, ca_key, files)
            return files

    def channel(
        self, address: str, identity: str, *, user_token: str | None = None
    ) -> grpc.aio.Channel:
        """An asyncio channel to any service this CA's certificates reach, calling as workload
        `identity` (with `user_token`: for that end user). The one way a caller's channel is
        opened: ServiceProcess.channel uses it for a started service, benchmarks and child
        processes that are given an address call it directly."""
        return secure_channel(address, self.files(identity), user_token=user_token)

    def user_token_keys(self) -> tuple[Path, Path]:
        """(signing key, JWKS): UserService signs user tokens with the first, every service
        verifies them with the second (promo_libs.user_tokens). Created on first use."""
        with self._lock:
            key_file = self.folder / SIGNING_FOLDER / SIGNING_KEY_NAME
            jwks_file = self.folder / JWKS_FOLDER / JWKS_NAME
            if not (key_file.exists() and jwks_file.exists()):
                _folder(key_file.parent)
                _folder(jwks_file.parent)
                key = ec.generate_private_key(ec.SECP256R1())
                jwks = {"keys": [public_jwk(key.public_key())]}
                _write(key_file, _key_pem(key), secret=True)
                _write(jwks_file, json.dumps(jwks, indent=2).encode(), secret=False)
            return key_file, jwks_file

    def reissue(self, identity: str) -> TlsPaths:
        """A new key and certificate for `identity`, replacing the old files atomically."""
        with self._lock:
            ca_cert, ca_key = self._ca()
            files = self._paths(identity)
            self._issue(identity, ca_cert, ca_key, files)
            return files

    def _paths(self, identity: str) -> TlsPaths:
        folder = self.identity_folder(identity)
        return TlsPaths(folder / CERT_NAME, folder / KEY_NAME, self.ca_file)

    def _ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert_file = self.folder / CA_FOLDER / BUNDLE_NAME
        key_file = self.folder / CA_FOLDER / "ca.key"
        if cert_file.exists() and key_file.exists():
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                if not self.ca_file.exists():  # a bundle removed by hand: the CA's own again
                    _folder(self.ca_file.parent)
                    _write(self.ca_file, cert_file.read_bytes(), secret=False)
                return cert, key
        _folder(key_file.parent)
        _folder(self.ca_file.parent)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "promo development CA")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        _write(key_file, _key_pem(key), secret=True)
        _write(cert_file, pem, secret=False)
        _write(self.ca_file, pem, secret=False)
        return cert, key

    def _issue(
        self,
        identity: str,
        ca_cert: x509.Certificate,
        ca_key: ec.EllipticCurvePrivateKey,
        files: TlsPaths,
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            # Every development CA has the same name: during a CA rotation, when a bundle holds
            # the old CA and the new, the key identifier is what picks the issuer (verifiers
            # otherwise try the first CA of that name and fail on its signature).
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.UniformResourceIdentifier(spiffe_id(identity, self.trust_domain)),
                        x509.DNSName("localhost"),
                        x509.DNSName(identity),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _folder(files.key.parent)
        # Key first: a reader that sees the new certificate must find its key already there.
        _write(files.key, _key_pem(key), secret=True)
        _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), secret=False)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _folder(path: Path) -> None:
    """One folder of the layout and the PKI folder above it, 0700: their owner's alone."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.mkdir(exist_ok=True, mode=0o700)


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    """Write-then-rename, so a service re-reading its files never sees half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    tmp.replace(path)
