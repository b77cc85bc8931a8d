"""A C2PA test certificate chain made at test time with `cryptography`: a root CA, an intermediate CA
and an end-entity signing certificate with the usages C2PA requires (digitalSignature; the
c2pa-kp-claimSigning and emailProtection extended key usages), ES256 (P-256) throughout."""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

C2PA_CLAIM_SIGNING = ObjectIdentifier("1.3.6.1.4.1.62558.2.1")


@dataclass
class Chain:
    cert: Path  # the signer's certificate, then the intermediate (PEM)
    key: Path  # the signer's private key (PEM)
    root: Path  # the root CA (PEM): what a verifier trusts
    private_key: ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Farm Test Studio")])


def _certificate(subject: str, issuer: str, key, issuer_key, *, ca: bool, days: int = 30) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
                 encipher_only=False, decipher_only=False)
    builder = (
        x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer)).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=1 if ca and subject == issuer else 0 if ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True, **usage), critical=True)
    else:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **usage), critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage([C2PA_CLAIM_SIGNING, ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_chain(folder: Path) -> Chain:
    folder.mkdir(parents=True, exist_ok=True)
    root_key, middle_key, signer_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _certificate("Farm Test Root CA", "Farm Test Root CA", root_key, root_key, ca=True)
    middle = _certificate("Farm Test Intermediate CA", "Farm Test Root CA", middle_key, root_key, ca=True)
    signer = _certificate("Farm Test Signer", "Farm Test Intermediate CA", signer_key, middle_key, ca=False)
    pem = lambda cert: cert.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    chain = Chain(folder / "chain.pem", folder / "signer.key", folder / "root.pem", signer_key)
    chain.cert.write_bytes(pem(signer) + pem(middle))
    chain.root.write_bytes(pem(root))
    chain.key.write_bytes(signer_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    return chain
