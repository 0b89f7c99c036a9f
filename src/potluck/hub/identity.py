"""Agent identity: Ed25519 challenge-response. No replayable secret ever crosses the wire."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from potluck.protocol.agent import challenge_payload


def new_nonce() -> bytes:
    return os.urandom(32)


def signature_valid(public_key: bytes, nonce: bytes, signature: bytes) -> bool:
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, challenge_payload(nonce, public_key))
    except (InvalidSignature, ValueError):
        return False
    return True
