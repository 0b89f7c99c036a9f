"""HubSettings.validate: start-up refuses options out of range with a message naming them."""

from __future__ import annotations

from pathlib import Path

import pytest

from potluck.hub.settings import HubSettings


def test_defaults_are_valid(tmp_path: Path) -> None:
    HubSettings(data_dir=tmp_path).validate()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scheduler_policy": "fastest"}, "--scheduler-policy"),
        ({"score_weights": "warmth=3"}, "unknown score weight"),
        ({"queue_user_share": 0.0}, "--queue-user-share"),
        ({"queue_user_share": 1.5}, "--queue-user-share"),
        ({"eject_failures": 0}, "--eject-failures"),
        ({"eject_base_s": 0.0}, "--eject-failures"),
        ({"eject_max_percent": 101.0}, "--eject-max-percent"),
        ({"retry_budget_percent": -1.0}, "--retry-budget-percent"),
        ({"platform_fee_percent": 100.5}, "--platform-fee-percent"),
        ({"reprice_interval": 0.0}, "--reprice-interval"),
        ({"port": 65536}, "--port"),
        ({"credit_window": 0}, "--credit-window"),
        ({"header_timeout": 0.0}, "--header-timeout"),
        ({"body_timeout": -1.0}, "--body-timeout"),
        ({"keepalive_timeout": 0.0}, "--keepalive-timeout"),
        ({"max_pending_connections_per_ip": -1}, "--max-pending-connections-per-ip"),
    ],
)
def test_out_of_range_options_are_refused(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    settings = HubSettings(data_dir=tmp_path, **changes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        settings.validate()


def test_the_signing_key_lives_in_the_data_dir_unless_given(tmp_path: Path) -> None:
    assert HubSettings(data_dir=tmp_path).resolved_signing_key_file == tmp_path / "hub-signing-key"
    chosen = tmp_path / "elsewhere" / "key"
    assert HubSettings(data_dir=tmp_path, signing_key_file=chosen).resolved_signing_key_file == chosen
