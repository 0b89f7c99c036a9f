"""Signed receipts: round trip, tampering, wrong keys, the key file, public key parsing."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import msgspec
import pytest

from potluck.hub.receipts import (
    HubKeyError,
    HubSigner,
    Receipt,
    ReceiptError,
    SignedReceipt,
    canonical_bytes,
    key_fingerprint,
    parse_public_key,
    signed_document,
    verify_receipt,
)
from potluck.protocol.errors import PotluckError


def make_receipt(signer: HubSigner, **changes: Any) -> Receipt:
    fields: dict[str, Any] = {
        "request_id": "req_1",
        "issued_at": "2026-11-23T12:00:00.000000+00:00",
        "hub": signer.fingerprint,
        "consumer_id": "usr_consumer",
        "key_id": "key_1",
        "group_id": "grp_1",
        "agent_id": "agt_1",
        "owner_id": "usr_owner",
        "model": "llama-3.1-8b",
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "input_per_mtok": 0.15,
        "output_per_mtok": 0.6,
        "multiplier": 1.25,
        "charged": 450,
        "fee": 22,
        "earned": 428,
        "outcome": "ok",
        "tokens_estimated": False,
    }
    fields.update(changes)
    return Receipt(**fields)


def edit(data: bytes, **changes: Any) -> bytes:
    """The signed receipt's JSON with fields of its receipt object changed, signature kept."""
    document = json.loads(data)
    document["receipt"].update(changes)
    return json.dumps(document).encode()


@pytest.fixture
def signer() -> HubSigner:
    return HubSigner.generate()


def test_a_signed_receipt_verifies_and_decodes_to_the_same_receipt(signer: HubSigner) -> None:
    receipt = make_receipt(signer)
    data = signer.sign(receipt).to_json()
    assert verify_receipt(data, signer.public_key) == receipt
    assert receipt.version == 1


def test_a_reformatted_receipt_file_still_verifies(signer: HubSigner) -> None:
    receipt = make_receipt(signer, model="modèle-😀", group_id=None, owner_id=None)
    data = signer.sign(receipt).to_json()
    reformatted = json.dumps(json.loads(data), indent=4, ensure_ascii=True).encode()
    assert reformatted != data
    assert verify_receipt(reformatted, signer.public_key) == receipt


def test_the_signature_covers_the_canonical_sorted_compact_bytes(signer: HubSigner) -> None:
    receipt = make_receipt(signer)
    signed = signer.sign(receipt)
    canonical = canonical_bytes(receipt)
    assert canonical == msgspec.json.encode(msgspec.to_builtins(receipt), order="sorted")
    keys = list(json.loads(canonical))
    assert keys == sorted(keys)
    assert canonical in signed.to_json()
    assert len(base64.b64decode(signed.signature)) == 64


def test_the_stored_form_is_the_served_document_and_verifies(signer: HubSigner) -> None:
    receipt = make_receipt(signer)
    payload, signature = signer.sign_canonical(receipt)
    assert payload == canonical_bytes(receipt)
    document = signed_document(payload, signature)
    assert document == signer.sign(receipt).to_json()
    assert verify_receipt(document, signer.public_key) == receipt


@pytest.mark.parametrize(
    "changes",
    [
        {"prompt_tokens": 1},
        {"completion_tokens": 3000},
        {"charged": 1},
        {"earned": 450},
        {"fee": 0},
        {"multiplier": 1.0},
        {"owner_id": "usr_someone_else"},
        {"group_id": None},
        {"tokens_estimated": True},
        {"request_id": "req_2"},
        {"extra": "field"},
    ],
)
def test_a_tampered_receipt_fails_verification(signer: HubSigner, changes: dict[str, Any]) -> None:
    data = signer.sign(make_receipt(signer)).to_json()
    with pytest.raises(ReceiptError, match="does not match"):
        verify_receipt(edit(data, **changes), signer.public_key)


def test_a_receipt_fails_with_another_hubs_key(signer: HubSigner) -> None:
    data = signer.sign(make_receipt(signer)).to_json()
    with pytest.raises(ReceiptError, match="signed by hub key"):
        verify_receipt(data, HubSigner.generate().public_key)


def test_a_receipt_naming_another_hub_key_fails_even_with_a_valid_signature(signer: HubSigner) -> None:
    other = HubSigner.generate()
    receipt = make_receipt(signer, hub=other.fingerprint)
    # A correct signature by `signer` over a receipt that claims to come from `other`.
    signature = base64.b64encode(signer._private_key.sign(canonical_bytes(receipt))).decode()
    data = SignedReceipt(receipt=receipt, signature=signature).to_json()
    with pytest.raises(ReceiptError, match=other.fingerprint):
        verify_receipt(data, signer.public_key)


def test_the_signer_refuses_a_receipt_naming_another_key(signer: HubSigner) -> None:
    with pytest.raises(ValueError, match="this key is"):
        signer.sign(make_receipt(signer, hub="ed25519:0000000000000000"))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not a signed receipt"),
        (b"[]", "not a signed receipt"),
        (b'{"receipt": {}}', "not a signed receipt"),
        (b'{"receipt": "x", "signature": "AAAA"}', "not a signed receipt"),
    ],
)
def test_malformed_receipt_files_fail_with_a_reason(signer: HubSigner, data: bytes, reason: str) -> None:
    with pytest.raises(ReceiptError, match=reason):
        verify_receipt(data, signer.public_key)


def test_a_signature_that_is_not_base64_fails(signer: HubSigner) -> None:
    document = json.loads(signer.sign(make_receipt(signer)).to_json())
    document["signature"] = "not base64!"
    with pytest.raises(ReceiptError, match="not valid base64"):
        verify_receipt(json.dumps(document).encode(), signer.public_key)


def test_a_signature_of_the_wrong_length_fails(signer: HubSigner) -> None:
    document = json.loads(signer.sign(make_receipt(signer)).to_json())
    document["signature"] = base64.b64encode(b"x" * 32).decode()
    with pytest.raises(ReceiptError, match="32 bytes"):
        verify_receipt(json.dumps(document).encode(), signer.public_key)


def test_a_signed_receipt_of_the_wrong_shape_fails(signer: HubSigner) -> None:
    shapeless = {"hub": signer.fingerprint, "version": 1, "charged": "lots"}
    signature = base64.b64encode(signer._private_key.sign(msgspec.json.encode(shapeless, order="sorted"))).decode()
    data = json.dumps({"receipt": shapeless, "signature": signature}).encode()
    with pytest.raises(ReceiptError, match="malformed"):
        verify_receipt(data, signer.public_key)


def test_a_receipt_of_an_unknown_version_fails(signer: HubSigner) -> None:
    receipt = msgspec.to_builtins(make_receipt(signer)) | {"version": 2}
    signature = base64.b64encode(signer._private_key.sign(msgspec.json.encode(receipt, order="sorted"))).decode()
    data = json.dumps({"receipt": receipt, "signature": signature}).encode()
    with pytest.raises(ReceiptError, match="version 2"):
        verify_receipt(data, signer.public_key)


def test_receipt_errors_are_potluck_errors() -> None:
    assert issubclass(ReceiptError, PotluckError)
    assert issubclass(HubKeyError, PotluckError)


def test_from_json_round_trips_and_rejects_junk(signer: HubSigner) -> None:
    signed = signer.sign(make_receipt(signer))
    assert SignedReceipt.from_json(signed.to_json()) == signed
    with pytest.raises(ReceiptError, match="not a signed receipt"):
        SignedReceipt.from_json(b'{"receipt": {"charged": 1}, "signature": ""}')


# -- the key file -----------------------------------------------------------------------------------


def test_the_key_file_is_created_owner_only_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "hub" / "receipt.key"
    first = HubSigner.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_bytes()) == 32
    assert list(path.parent.iterdir()) == [path], "the temporary file was left behind"
    again = HubSigner.load_or_create(path)
    assert again.public_key == first.public_key
    assert again.fingerprint == first.fingerprint
    data = first.sign(make_receipt(first)).to_json()
    assert verify_receipt(data, again.public_key).request_id == "req_1"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "receipt.key"
    HubSigner.load_or_create(path)
    os.chmod(path, mode)
    with pytest.raises(HubKeyError, match=f"mode {mode:04o}.*chmod 600"):
        HubSigner.load_or_create(path)


def test_a_key_file_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "receipt.key"
    path.write_bytes(b"x" * 31)
    os.chmod(path, 0o600)
    with pytest.raises(HubKeyError, match="32-byte"):
        HubSigner.load_or_create(path)


def test_a_key_path_that_cannot_be_read_is_a_hub_key_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(HubKeyError, match="cannot read the hub key"):
        HubSigner.load_or_create(blocker / "receipt.key")
    with pytest.raises(HubKeyError, match="cannot read the hub key"):
        HubSigner.load_or_create(tmp_path)


def test_the_fingerprint_names_the_algorithm_and_the_keys_hash(signer: HubSigner) -> None:
    assert signer.fingerprint == key_fingerprint(signer.public_key)
    prefix, digest = signer.fingerprint.split(":")
    assert prefix == "ed25519"
    assert len(digest) == 16
    assert key_fingerprint(HubSigner.generate().public_key) != signer.fingerprint


# -- the public key ---------------------------------------------------------------------------------


def test_parse_public_key_accepts_base64_and_the_well_known_document(signer: HubSigner) -> None:
    document = signer.public_key_document()
    assert document["algorithm"] == "ed25519"
    assert document["fingerprint"] == signer.fingerprint
    assert parse_public_key(document["public_key"]) == signer.public_key
    assert parse_public_key(document["public_key"] + "\n") == signer.public_key
    assert parse_public_key(json.dumps(document, indent=2) + "\n") == signer.public_key


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not base64!", "not valid base64"),
        (base64.b64encode(b"x" * 31).decode(), "31 bytes"),
        ("{not json", "not valid JSON"),
        ('{"fingerprint": "ed25519:00"}', 'no "public_key"'),
        ('["x"]', 'no "public_key"'),
    ],
)
def test_parse_public_key_rejects_what_is_not_a_key(text: str, reason: str) -> None:
    with pytest.raises(ReceiptError, match=reason):
        parse_public_key(text)


def test_parse_public_key_rejects_a_document_whose_fingerprint_does_not_match(signer: HubSigner) -> None:
    document = signer.public_key_document() | {"fingerprint": HubSigner.generate().fingerprint}
    with pytest.raises(ReceiptError, match="does not match"):
        parse_public_key(json.dumps(document))


def test_parse_public_key_rejects_another_algorithm(signer: HubSigner) -> None:
    document = signer.public_key_document() | {"algorithm": "rsa"}
    with pytest.raises(ReceiptError, match="rsa"):
        parse_public_key(json.dumps(document))
