"""Ed25519 server keys, JSON signing and event signing.

Implements "Signing JSON" / "Checking for a signature" from the spec
appendices and "Adding hashes and signatures to outgoing events" from the
server-server API.  Keys are stored in the classic homeserver key-file
format: one ``ed25519 <version> <unpadded-base64 seed>`` line per key.
"""

from __future__ import annotations

import copy
from typing import Any

import nacl.exceptions
import nacl.signing

from myelin.events.canonical import (
    encode_canonical_json,
    unpadded_b64decode,
    unpadded_b64encode,
)
from myelin.events.hashing import add_content_hash
from myelin.events.redaction import prune_event_dict
from myelin.events.room_versions import RoomVersion

__all__ = [
    "SignatureError",
    "SigningKey",
    "VerifyKey",
    "decode_signing_key_base64",
    "decode_verify_key_base64",
    "encode_verify_key_base64",
    "generate_signing_key",
    "read_signing_keys",
    "sign_event",
    "sign_json",
    "verify_event_signature",
    "verify_key_id",
    "verify_signed_json",
    "write_signing_keys",
]

ED25519 = "ed25519"


class SignatureError(Exception):
    """A signature is missing, malformed or does not verify."""


class VerifyKey:
    """A public key with its algorithm and version (``ed25519:<version>``)."""

    __slots__ = ("_key", "alg", "version")

    def __init__(self, key_bytes: bytes, version: str, alg: str = ED25519) -> None:
        if alg != ED25519:
            raise ValueError(f"unsupported key algorithm {alg!r}")
        self.alg = alg
        self.version = version
        self._key = nacl.signing.VerifyKey(key_bytes)

    def encode(self) -> bytes:
        """The raw 32 public key bytes."""
        return bytes(self._key)

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise :class:`SignatureError` unless ``signature`` is valid for ``message``."""
        try:
            self._key.verify(message, signature)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError) as e:
            raise SignatureError(f"bad signature for {verify_key_id(self)}") from e

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VerifyKey):
            return NotImplemented
        return (self.alg, self.version, self.encode()) == (other.alg, other.version, other.encode())

    def __hash__(self) -> int:
        return hash((self.alg, self.version, self.encode()))

    def __repr__(self) -> str:
        return f"<VerifyKey {verify_key_id(self)} {encode_verify_key_base64(self)}>"


class SigningKey:
    """A private ed25519 key (kept as its 32-byte seed) with a version."""

    __slots__ = ("_key", "alg", "version")

    def __init__(self, seed: bytes, version: str, alg: str = ED25519) -> None:
        if alg != ED25519:
            raise ValueError(f"unsupported key algorithm {alg!r}")
        self.alg = alg
        self.version = version
        self._key = nacl.signing.SigningKey(seed)

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    @property
    def verify_key(self) -> VerifyKey:
        return VerifyKey(bytes(self._key.verify_key), self.version, self.alg)

    def sign(self, message: bytes) -> bytes:
        """Detached 64-byte signature of ``message``."""
        return bytes(self._key.sign(message).signature)

    def __repr__(self) -> str:
        # Deliberately does not print the seed.
        return f"<SigningKey {verify_key_id(self)}>"


def generate_signing_key(version: str) -> SigningKey:
    """A fresh random ed25519 key with the given version string."""
    return SigningKey(bytes(nacl.signing.SigningKey.generate()), version)


def decode_signing_key_base64(alg: str, version: str, key_base64: str) -> SigningKey:
    return SigningKey(unpadded_b64decode(key_base64), version, alg)


def decode_verify_key_base64(alg: str, version: str, key_base64: str) -> VerifyKey:
    return VerifyKey(unpadded_b64decode(key_base64), version, alg)


def encode_verify_key_base64(key: VerifyKey | SigningKey) -> str:
    """Unpadded Base64 of the public key (a signing key gives its public half)."""
    vk = key.verify_key if isinstance(key, SigningKey) else key
    return unpadded_b64encode(vk.encode())


def verify_key_id(key: VerifyKey | SigningKey) -> str:
    """``<alg>:<version>``, e.g. ``ed25519:a_AbCd``."""
    return f"{key.alg}:{key.version}"


def read_signing_keys(text: str) -> list[SigningKey]:
    """Parse a key file: ``<alg> <version> <unpadded-b64 seed>`` per line.

    Blank lines are ignored; anything else malformed raises ``ValueError``.
    """
    keys: list[SigningKey] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"line {lineno}: expected '<alg> <version> <seed>'")
        alg, version, seed = parts
        keys.append(decode_signing_key_base64(alg, version, seed))
    return keys


def write_signing_keys(keys: list[SigningKey]) -> str:
    """Inverse of :func:`read_signing_keys`."""
    return "".join(f"{k.alg} {k.version} {unpadded_b64encode(k.seed)}\n" for k in keys)


def _signable_bytes(obj: dict[str, Any]) -> bytes:
    # Signatures and unsigned data are excluded from what is signed: the
    # former by construction, the latter because servers may change it.
    return encode_canonical_json(
        {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")},
        # Signing old-room-version events must not fail on their legacy numbers;
        # strictness for new events is enforced where they are created.
        strict=False,
    )


def sign_json(obj: dict[str, Any], server_name: str, key: SigningKey) -> dict[str, Any]:
    """Return a copy of ``obj`` with ``key``'s signature added under ``server_name``.

    Existing signatures (from other keys or servers) are kept.
    """
    signature = unpadded_b64encode(key.sign(_signable_bytes(obj)))
    out = dict(obj)
    sigs = copy.deepcopy(obj.get("signatures", {}))
    if not isinstance(sigs, dict):
        raise SignatureError("'signatures' is not an object")
    server_sigs = sigs.setdefault(server_name, {})
    if not isinstance(server_sigs, dict):
        raise SignatureError(f"signatures for {server_name!r} is not an object")
    server_sigs[verify_key_id(key)] = signature
    out["signatures"] = sigs
    return out


def verify_signed_json(obj: dict[str, Any], server_name: str, verify_key: VerifyKey) -> None:
    """Check ``obj`` carries a valid signature by ``verify_key`` for ``server_name``.

    Raises :class:`SignatureError` if it is missing, undecodable or wrong.
    """
    sigs = obj.get("signatures")
    if not isinstance(sigs, dict):
        raise SignatureError("no signatures")
    server_sigs = sigs.get(server_name)
    key_id = verify_key_id(verify_key)
    if not isinstance(server_sigs, dict) or key_id not in server_sigs:
        raise SignatureError(f"missing signature for {server_name} {key_id}")
    sig_b64 = server_sigs[key_id]
    if not isinstance(sig_b64, str):
        raise SignatureError(f"malformed signature for {server_name} {key_id}")
    try:
        sig = unpadded_b64decode(sig_b64)
    except ValueError as e:
        raise SignatureError(f"undecodable signature for {server_name} {key_id}") from e
    try:
        message = _signable_bytes(obj)
    except ValueError as e:
        raise SignatureError(f"object cannot be canonicalised: {e}") from e
    verify_key.verify(message, sig)


def sign_event(
    pdu: dict[str, Any], server_name: str, key: SigningKey, room_version: RoomVersion
) -> dict[str, Any]:
    """Add the content hash, then sign the redacted form; return the full event.

    Signing the redacted form is what lets a redacted copy of the event still
    be verified later.  The input dict is not modified.
    """
    hashed = add_content_hash(pdu, room_version)
    signed_redacted = sign_json(prune_event_dict(hashed, room_version), server_name, key)
    hashed["signatures"] = signed_redacted["signatures"]
    return hashed


def verify_event_signature(
    pdu: dict[str, Any], server_name: str, verify_key: VerifyKey, room_version: RoomVersion
) -> None:
    """Verify ``server_name``'s signature on an event (full or redacted copy).

    Only the signature is checked; the content hash is a separate step
    (:func:`myelin.events.hashing.check_content_hash`).
    """
    verify_signed_json(prune_event_dict(pdu, room_version), server_name, verify_key)
