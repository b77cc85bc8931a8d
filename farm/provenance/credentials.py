"""C2PA Content Credentials in the finished video: who made it (the operator's certificate), how
(`c2pa.created` by motion-farm, with the IPTC digital source type of the backend), from what (the
motion video and the character image as ingredients, with their sha256) and under which record
(the shot id, its content key and a hash of the farm record). Signed with c2pa-python, the Content
Authenticity Initiative's library, with the operator's key file or a signing callback (KMS, HSM).

The farm manifest records the sha256 of the *signed* video, so the C2PA manifest cannot hold the
farm manifest's hash (each would contain the other's). It holds instead `record_sha256`: the
sha256 of the parts of the farm record that are fixed before the video is made (RECORD_KEYS: inputs,
rights, prompt, resolved config, versions, seeds, shot id and content key). `farm verify` recomputes
it from a manifest.json to show that the record and the video belong together.
"""
from __future__ import annotations

import datetime
import hashlib
import importlib
import json
import mimetypes
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from farm._version import __version__
from farm.config import ProvenanceConfig
from farm.errors import FarmError

# The farm record's parts that exist when the video is signed, and never change after.
RECORD_KEYS = ("schema_version", "shot_id", "content_key", "prompt", "inputs", "rights", "config", "versions", "seeds")
ASSERTION = "org.motion-farm.shot"  # our own assertion: the record's keys, the inputs' hashes, the rights
IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
# c2pa-kp-claimSigning, id-kp-documentSigning, id-kp-emailProtection, MS C2PA signing: the extended
# key usages a C2PA validator accepts on a signing certificate.
_SIGNING_USAGES = {"1.3.6.1.4.1.62558.2.1", "1.3.6.1.5.5.7.3.36", "1.3.6.1.5.5.7.3.4", "1.3.6.1.4.1.311.76.59.1.9"}


@dataclass(frozen=True)
class Signing:
    """How to sign: the certificate chain (PEM, signer first) and either the private key (PEM) or a
    function that signs bytes with it. alg: the C2PA algorithm its key type calls for."""

    chain: bytes
    alg: str  # "es256", "es384", "es512", "ps256", "ed25519"
    signer: str  # the certificate's subject, for the record
    key: bytes | None = None
    sign: Callable[[bytes], bytes] | None = None


def load_signing(provenance: ProvenanceConfig) -> Signing:
    """The operator's signing identity from provenance.cert and provenance.key (or .signer),
    checked: readable PEM, a key that matches the certificate, inside its validity, usable for C2PA.
    Raises FarmError naming the setting at fault."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    chain = _read("provenance.cert", provenance.cert)
    try:
        certificates = x509.load_pem_x509_certificates(chain)
    except ValueError:
        raise FarmError(f"config provenance.cert {provenance.cert}", "holds no PEM certificate",
                        "give the signing certificate in PEM, followed by its intermediates") from None
    leaf = certificates[0]
    _check_certificate(leaf, provenance.cert)
    key = sign = None
    if provenance.key:
        key = _read("provenance.key", provenance.key)
        try:
            private = serialization.load_pem_private_key(key, password=None)
        except (ValueError, TypeError):
            raise FarmError(f"config provenance.key {provenance.key}", "is not an unencrypted PEM private key",
                            "give the certificate's private key in PEM (PKCS#8 or traditional), without a passphrase") from None
        if _public(private.public_key()) != _public(leaf.public_key()):
            raise FarmError(f"config provenance.key {provenance.key}", f"is not the key of the certificate in {provenance.cert}",
                            "give the private key that belongs to the signing certificate")
    else:
        sign = _import_signer(provenance.signer)
    return Signing(chain=chain, alg=_algorithm(leaf.public_key(), provenance.cert), signer=leaf.subject.rfc4514_string(),
                   key=key, sign=sign)


def sign_video(video: Path, definition: dict, signing: Signing, *, tsa_url: str | None = None) -> None:
    """Sign the MP4 in place with the C2PA manifest `definition` (see manifest_definition); the
    file is replaced only once the signed copy is complete."""
    import c2pa

    signed = video.with_name(f".{video.stem}.{secrets.token_hex(6)}.signed.mp4")
    alg = getattr(c2pa.C2paSigningAlg, signing.alg.upper())
    try:
        with _signer(c2pa, signing, alg, tsa_url) as signer, c2pa.Builder(definition) as builder:
            with open(video, "rb") as source, open(signed, "w+b") as target:
                builder.sign(signer, "video/mp4", source, target)
        os.replace(signed, video)
    except c2pa.C2paError as exc:
        raise FarmError(f"video {video.name}", f"could not be signed: {exc}", "check provenance.cert and provenance.key") from None
    finally:
        signed.unlink(missing_ok=True)


def manifest_definition(record: dict, *, source_type: str, backend: str, watermark: str | None) -> dict:
    """The C2PA manifest of a shot's video from its farm record (the keys of RECORD_KEYS).

    source_type: the IPTC digital source type name (BackendSpec.source_type); backend:
    "name/version"; watermark: the hex code in the frames, or None."""
    inputs = record.get("inputs") or {}
    rights = record.get("rights") or {}
    ingredients = [_ingredient(inputs[name], noun) for name, noun in (("motion", "motion reference video"),
                                                                      ("character", "character image")) if name in inputs]
    created = {
        "action": "c2pa.created",
        "digitalSourceType": IPTC + source_type,
        "softwareAgent": {"name": "motion-farm", "version": __version__},
        "description": "the character image performing the motion of the reference video",
        "parameters": {"backend": backend, **({"model": record["model"]} if record.get("model") else {})},
    }
    shot = {
        "shot_id": record.get("shot_id"),
        "content_key": record.get("content_key"),
        "record_sha256": record_digest(record),
        "inputs": {name: {"uri": item.get("uri"), "sha256": item.get("sha256")} for name, item in inputs.items()},
        "rights": rights,
        "prompt": record.get("prompt") or "",
        "watermark": watermark,
    }
    return {
        "claim_generator_info": [{"name": "motion-farm", "version": __version__}],
        "title": f"{record.get('shot_id')}.mp4",
        "format": "video/mp4",
        "ingredients": ingredients,
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [created]}},
            {"label": ASSERTION, "data": shot},
        ],
    }


def record_digest(record: dict) -> str:
    """sha256 of the record's parts fixed before the video exists (RECORD_KEYS), as canonical JSON
    (sorted keys, no spaces): the same from the record in memory, whose values there are plain JSON
    values, and from its manifest.json."""
    fixed = {key: record[key] for key in RECORD_KEYS if key in record}
    return hashlib.sha256(json.dumps(fixed, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _ingredient(item: dict, noun: str) -> dict:
    """An input as a C2PA ingredient: an input to the generation (`inputTo`), named and hashed."""
    name = PurePosixPath(str(item.get("uri", ""))).name or noun
    return {
        "title": name,
        "format": mimetypes.guess_type(name)[0] or "application/octet-stream",
        "relationship": "inputTo",
        "description": f"{noun}, sha256 {item.get('sha256')}",
    }


def _signer(c2pa, signing: Signing, alg, tsa_url: str | None):
    if signing.key is not None:
        return c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg=alg, sign_cert=signing.chain, private_key=signing.key, ta_url=tsa_url))
    return c2pa.Signer.from_callback(signing.sign, alg, signing.chain.decode(), tsa_url)


def _read(setting: str, path: str | None) -> bytes:
    try:
        return Path(str(path)).expanduser().read_bytes()
    except OSError as exc:
        raise FarmError(f"config {setting} {path}", f"cannot be read ({exc.strerror})",
                        "give the path of the PEM file on every node that finishes shots") from None


def _check_certificate(leaf, where: str | None) -> None:
    from cryptography import x509

    now = datetime.datetime.now(datetime.UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise FarmError(f"config provenance.cert {where}", f"is valid from {leaf.not_valid_before_utc:%Y-%m-%d} to "
                        f"{leaf.not_valid_after_utc:%Y-%m-%d}, not now", "renew the signing certificate")
    try:
        usages = {usage.dotted_string for usage in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value}
        signs = leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    except x509.ExtensionNotFound:
        usages, signs = set(), False
    if not signs or not usages & _SIGNING_USAGES:
        raise FarmError(f"config provenance.cert {where}", "is not a C2PA signing certificate (it needs the key usage "
                        "digitalSignature and an extended key usage such as c2pa-kp-claimSigning, documentSigning or "
                        "emailProtection)", "use a certificate issued for signing content credentials")


def _algorithm(public_key, where: str | None) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curves = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if public_key.curve.name in curves:
            return curves[public_key.curve.name]
    elif isinstance(public_key, rsa.RSAPublicKey):
        return "ps256"
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    raise FarmError(f"config provenance.cert {where}", "has a key type C2PA does not sign with",
                    "use an EC P-256/P-384/P-521, RSA (PS256) or Ed25519 certificate")


def _public(public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _import_signer(target: str | None) -> Callable[[bytes], bytes]:
    """provenance.signer, "package.module:function": the function that signs with the certificate's key."""
    module, _, name = str(target).partition(":")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise FarmError(f"config provenance.signer {target}", f"cannot be imported ({exc})",
                        "give it as package.module:function, importable on every node that finishes shots") from None
    if not callable(found):
        raise FarmError(f"config provenance.signer {target}", "is not a function", "name a function bytes -> signature")
    return found
