"""`potluck receipt verify` as a subprocess, on receipts signed here with a real hub key file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from potluck.hub.receipts import HubSigner, Receipt
from tests.cli.test_cli_groups import Cli


@pytest.fixture
def signer(tmp_path: Path) -> HubSigner:
    return HubSigner.load_or_create(tmp_path / "hub" / "receipt.key")


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "config")


def receipt_file(signer: HubSigner, path: Path) -> Path:
    receipt = Receipt(
        request_id="req_9f3a1c",
        issued_at="2026-11-23T12:00:00.000000+00:00",
        hub=signer.fingerprint,
        consumer_id="usr_alice",
        key_id="key_laptop",
        group_id="grp_owls",
        agent_id="agt_gpu",
        owner_id="usr_bob",
        model="llama-3.1-8b",
        prompt_tokens=1200,
        completion_tokens=300,
        input_per_mtok=0.15,
        output_per_mtok=0.6,
        multiplier=1.5,
        charged=1_234_567,
        fee=61_728,
        earned=1_172_839,
        outcome="ok",
        tokens_estimated=False,
    )
    path.write_bytes(signer.sign(receipt).to_json())
    return path


def well_known_document(signer: HubSigner, path: Path) -> Path:
    """What ``curl https://hub/.well-known/potluck-hub-key > hub.key`` leaves."""
    path.write_text(json.dumps(signer.public_key_document()))
    return path


def test_a_valid_receipt_verifies_with_the_well_known_key_file(signer: HubSigner, cli: Cli, tmp_path: Path) -> None:
    receipt = receipt_file(signer, tmp_path / "receipt.json")
    key = well_known_document(signer, tmp_path / "hub.key")
    result = cli("receipt", "verify", str(receipt), "--key", str(key))
    assert result.code == 0, result.both
    assert "req_9f3a1c" in result.out
    assert "1.234567 credits" in result.out
    assert "llama-3.1-8b" in result.out
    assert "usr_bob" in result.out
    assert f"valid: signed by hub key {signer.fingerprint}" in result.out


def test_a_valid_receipt_verifies_with_a_base64_key_and_from_standard_input(
    signer: HubSigner, cli: Cli, tmp_path: Path
) -> None:
    receipt = receipt_file(signer, tmp_path / "receipt.json")
    key = signer.public_key_document()["public_key"]
    result = cli("receipt", "verify", "-", "--key", key, stdin=receipt.read_text())
    assert result.code == 0, result.both
    assert "req_9f3a1c" in result.out


def test_a_tampered_receipt_exits_1_with_the_reason(signer: HubSigner, cli: Cli, tmp_path: Path) -> None:
    path = receipt_file(signer, tmp_path / "receipt.json")
    document = json.loads(path.read_text())
    document["receipt"]["charged"] = 1
    path.write_text(json.dumps(document))
    key = well_known_document(signer, tmp_path / "hub.key")
    result = cli("receipt", "verify", str(path), "--key", str(key))
    assert result.code == 1, result.both
    assert "invalid receipt: the signature does not match" in result.err
    assert "valid: signed" not in result.out


def test_a_receipt_from_another_hub_exits_1(signer: HubSigner, cli: Cli, tmp_path: Path) -> None:
    receipt = receipt_file(signer, tmp_path / "receipt.json")
    other = well_known_document(HubSigner.generate(), tmp_path / "other.key")
    result = cli("receipt", "verify", str(receipt), "--key", str(other))
    assert result.code == 1, result.both
    assert f"signed by hub key '{signer.fingerprint}'" in result.err


def test_a_key_that_is_not_a_key_is_a_usage_error(signer: HubSigner, cli: Cli, tmp_path: Path) -> None:
    receipt = receipt_file(signer, tmp_path / "receipt.json")
    result = cli("receipt", "verify", str(receipt), "--key", "not-a-key")
    assert result.code == 2, result.both
    assert "--key" in result.err
    assert "not valid base64" in result.err
