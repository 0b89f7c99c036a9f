"""The agent's Ed25519 key and enrolment record, kept in its data dir (private key mode 0600)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from potluck.protocol.agent import challenge_payload

KEY_FILE = "agent_key"
ENROLMENT_FILE = "enrolment.json"


@dataclass(slots=True)
class Identity:
    private_key: Ed25519PrivateKey
    data_dir: Path

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign_challenge(self, nonce: bytes) -> bytes:
        return self.private_key.sign(challenge_payload(nonce, self.public_key))

    def enrolled_with(self, hub_url: str) -> str | None:
        """The agent id this hub gave us, if we enrolled with it before."""
        return enrolment(self.data_dir, hub_url)

    def remember_enrolment(self, hub_url: str, agent_id: str) -> None:
        path = self.data_dir / ENROLMENT_FILE
        try:
            record = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError):
            record = {}
        record.setdefault("hubs", {})[hub_url] = agent_id
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(path)


def enrolment(data_dir: Path, hub_url: str) -> str | None:
    """The agent id a hub gave the agent whose data dir this is, if it enrolled with it (no key is read)."""
    path = data_dir / ENROLMENT_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    agent_id = record.get("hubs", {}).get(hub_url)
    return agent_id if isinstance(agent_id, str) else None


def load_or_create(data_dir: Path) -> Identity:
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    path = data_dir / KEY_FILE
    if path.exists():
        raw = path.read_bytes()
        return Identity(Ed25519PrivateKey.from_private_bytes(raw), data_dir)
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    return Identity(key, data_dir)
