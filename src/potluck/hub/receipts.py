"""Signed receipts: the hub's Ed25519 signature over what one request cost and who earned it.

A receipt is signed over its **canonical bytes**: ``msgspec.json.encode(receipt, order="sorted")``,
compact JSON with the keys in sorted order. A verifier decodes the ``receipt`` object of the JSON
it was given as plain JSON (a dict), re-encodes it the same way and checks the signature over those
bytes, so a field added in a later version is still covered by the signature. The file a consumer
or an agent owner keeps is `SignedReceipt.to_json`: ``{"receipt": {...}, "signature": BASE64}``.

The hub's key is a raw 32-byte Ed25519 private key in one file (mode 0600). Its public half is served
at ``GET /.well-known/potluck-hub-key`` as `HubSigner.public_key_document`; each receipt names the
key that signed it by `key_fingerprint` in its ``hub`` field.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from potluck.hub.errors import HubError
from potluck.protocol.errors import ErrorCode

RECEIPT_VERSION = 1
ALGORITHM = "ed25519"
_KEY_BYTES = 32
_SIGNATURE_BYTES = 64


class ReceiptError(HubError):
    """A receipt or a public key that does not check out; the message says why."""

    code = ErrorCode.INVALID_REQUEST


class HubKeyError(HubError):
    """The hub's signing key file cannot be used (wrong permissions, wrong size, unreadable)."""


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """What one request cost. Amounts are integers in micro-credits (1 credit = 1_000_000 µcr)."""

    version: int = RECEIPT_VERSION
    """Receipt format version."""
    request_id: str
    """The request this receipt is for."""
    issued_at: str
    """When the hub issued it: ISO 8601, UTC."""
    hub: str
    """Fingerprint of the hub key that signed it (`key_fingerprint`)."""
    consumer_id: str
    """The user whose key made the request (who paid)."""
    key_id: str
    """The API key used."""
    group_id: str | None
    """The group the request was billed in; None when the consumer used their own agent outside a group."""
    agent_id: str
    """The agent that served it."""
    owner_id: str | None
    """The agent's owner (who earned); None for an agent without an owner."""
    model: str
    """The model that served it."""
    prompt_tokens: int
    """Prompt tokens billed."""
    completion_tokens: int
    """Completion tokens billed."""
    input_per_mtok: float
    """Price of prompt tokens, credits per million tokens (before the multiplier)."""
    output_per_mtok: float
    """Price of completion tokens, credits per million tokens (before the multiplier)."""
    multiplier: float
    """Dynamic-pricing multiplier applied to both prices (1.0 without dynamic pricing)."""
    charged: int
    """µcr taken from the consumer."""
    fee: int
    """µcr of ``charged`` kept by the hub."""
    earned: int
    """µcr credited to the owner (``charged - fee``)."""
    outcome: str
    """How the request ended, e.g. ``ok``, ``cancelled``, ``error``."""
    tokens_estimated: bool
    """True when the hub estimated the token counts instead of using the agent's report."""
    cache_read_tokens: int = 0
    """The part of ``prompt_tokens`` the backend read from its prompt cache (as it reported)."""
    cache_write_tokens: int = 0
    """The part of ``prompt_tokens`` the backend wrote to its prompt cache (as it reported)."""
    reasoning_tokens: int = 0
    """The part of ``completion_tokens`` spent reasoning (as the backend reported)."""


class SignedReceipt(msgspec.Struct, frozen=True):
    """A receipt with the hub's signature (base64 of 64 bytes) over `canonical_bytes` of it."""

    receipt: Receipt
    """What was signed."""
    signature: str
    """Base64 of the Ed25519 signature over the receipt's canonical bytes."""

    def to_json(self) -> bytes:
        """Compact JSON, keys sorted: the ``receipt`` object in it is exactly the bytes that were signed."""
        return msgspec.json.encode(self, order="sorted")

    @classmethod
    def from_json(cls, data: bytes) -> SignedReceipt:
        """Parse (without verifying the signature: that is `verify_receipt`). Raises `ReceiptError`."""
        try:
            return msgspec.json.decode(data, type=cls)
        except msgspec.DecodeError as exc:
            raise ReceiptError(f"not a signed receipt: {exc}") from exc


class _Envelope(msgspec.Struct):
    receipt: dict[str, Any]
    signature: str


def canonical_bytes(receipt: Receipt) -> bytes:
    """The bytes a receipt is signed over: compact JSON with sorted keys."""
    return msgspec.json.encode(receipt, order="sorted")


def signed_document(payload: bytes, signature: str) -> bytes:
    """The signed receipt as served and verified, from its stored canonical payload and signature
    (the same document `SignedReceipt.to_json` writes, without decoding and re-encoding the payload)."""
    return b'{"receipt":' + payload + b',"signature":"' + signature.encode("ascii") + b'"}'


def key_fingerprint(public_key: bytes) -> str:
    """``ed25519:`` and the first 16 hex digits of the SHA-256 of the raw 32-byte public key."""
    return f"{ALGORITHM}:{hashlib.sha256(public_key).hexdigest()[:16]}"


class HubSigner:
    """The hub's receipt-signing key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key: bytes = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.fingerprint: str = key_fingerprint(self.public_key)

    @classmethod
    def generate(cls) -> HubSigner:
        """A new key held only in memory."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> HubSigner:
        """The key in ``path``, made on first use (mode 0600 from the moment the file exists).

        Raises `HubKeyError` when the file is readable or writable by group or others, is not
        32 bytes, or cannot be read or written.
        """
        try:
            return cls._load(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise HubKeyError(f"cannot read the hub key {path}: {exc}") from exc
        raw = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        try:
            _create_exclusive(path, raw)
        except FileExistsError:
            pass  # another process made it first: use theirs, so every receipt names one key
        except OSError as exc:
            raise HubKeyError(f"cannot create the hub key {path}: {exc}") from exc
        try:
            return cls._load(path)
        except OSError as exc:
            raise HubKeyError(f"cannot read the hub key {path}: {exc}") from exc

    @classmethod
    def _load(cls, path: Path) -> HubSigner:
        with path.open("rb") as handle:
            mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
            if mode & 0o077:
                raise HubKeyError(
                    f"the hub key {path} has mode {mode:04o}: it must be readable by its owner only "
                    f"(run `chmod 600 {path}`)"
                )
            raw = handle.read(_KEY_BYTES + 1)
        if len(raw) != _KEY_BYTES:
            raise HubKeyError(f"the hub key {path} is not a raw {_KEY_BYTES}-byte Ed25519 private key")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def sign(self, receipt: Receipt) -> SignedReceipt:
        """Sign ``receipt``, whose ``hub`` must be this key's fingerprint (else `ValueError`)."""
        _payload, signature = self.sign_canonical(receipt)
        return SignedReceipt(receipt=receipt, signature=signature)

    def sign_canonical(self, receipt: Receipt) -> tuple[bytes, str]:
        """(`canonical_bytes` of ``receipt``, the base64 signature over them): what the hub stores."""
        if receipt.hub != self.fingerprint:
            raise ValueError(f"receipt names hub key {receipt.hub!r}, but this key is {self.fingerprint!r}")
        payload = canonical_bytes(receipt)
        return payload, base64.b64encode(self._private_key.sign(payload)).decode("ascii")

    def public_key_document(self) -> dict[str, str]:
        """The body of ``GET /.well-known/potluck-hub-key``."""
        return {
            "algorithm": ALGORITHM,
            "public_key": base64.b64encode(self.public_key).decode("ascii"),
            "fingerprint": self.fingerprint,
        }


def _create_exclusive(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file at ``path`` atomically; `FileExistsError` if ``path`` exists.

    The bytes go to a 0600 temporary file first, which is then hard-linked into place: a crash leaves
    no half-written key, and two hubs starting at once do not overwrite each other's key.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".hub-key-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReceiptError(f"{what} is not valid base64") from exc


def parse_public_key(text: str) -> bytes:
    """A hub's raw 32-byte public key from base64, or from the ``/.well-known/potluck-hub-key`` JSON.

    Raises `ReceiptError` when it is neither, is not 32 bytes, or the document's fingerprint does
    not match its key.
    """
    text = text.strip()
    fingerprint: object = None
    if text.startswith(("{", "[")):
        try:
            document = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise ReceiptError(f"the hub key document is not valid JSON: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get("public_key"), str):
            raise ReceiptError('the hub key document has no "public_key" string')
        if document.get("algorithm", ALGORITHM) != ALGORITHM:
            raise ReceiptError(f"the hub key uses {document.get('algorithm')!r}, not {ALGORITHM}")
        text, fingerprint = document["public_key"], document.get("fingerprint")
    key = _b64decode(text, "the hub key")
    if len(key) != _KEY_BYTES:
        raise ReceiptError(f"the hub key is {len(key)} bytes; an Ed25519 public key is {_KEY_BYTES}")
    if fingerprint is not None and fingerprint != key_fingerprint(key):
        raise ReceiptError(f"the hub key document's fingerprint {fingerprint!r} does not match its key")
    return key


def verify_receipt(data: bytes, public_key: bytes) -> Receipt:
    """The receipt in ``data`` (`SignedReceipt.to_json`), if the hub with ``public_key`` signed it.

    Raises `ReceiptError` for JSON that is not a signed receipt, a signature that is not base64 of
    64 bytes or does not match, a receipt signed by another hub key (``hub`` fingerprint), or an
    unknown receipt version.
    """
    try:
        envelope = msgspec.json.decode(data, type=_Envelope)
    except msgspec.DecodeError as exc:
        raise ReceiptError(f"not a signed receipt: {exc}") from exc
    signature = _b64decode(envelope.signature, "the signature")
    if len(signature) != _SIGNATURE_BYTES:
        raise ReceiptError(f"the signature is {len(signature)} bytes; an Ed25519 signature is {_SIGNATURE_BYTES}")
    if len(public_key) != _KEY_BYTES:
        raise ReceiptError(f"the hub key is {len(public_key)} bytes; an Ed25519 public key is {_KEY_BYTES}")
    fingerprint = key_fingerprint(public_key)
    named = envelope.receipt.get("hub")
    if named != fingerprint:
        raise ReceiptError(f"the receipt was signed by hub key {named!r}, not by this key ({fingerprint})")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            signature, msgspec.json.encode(envelope.receipt, order="sorted")
        )
    except (InvalidSignature, ValueError):
        raise ReceiptError(
            "the signature does not match the receipt: it was altered or not signed by this hub"
        ) from None
    version = envelope.receipt.get("version")
    if version != RECEIPT_VERSION:
        raise ReceiptError(f"receipt version {version!r} is not one this potluck reads ({RECEIPT_VERSION})")
    try:
        return msgspec.convert(envelope.receipt, type=Receipt)
    except msgspec.ValidationError as exc:
        raise ReceiptError(f"the receipt is malformed: {exc}") from exc
