"""Model names: group aliases, the hub's own aliases, and Claude Code's dated names by family."""

from __future__ import annotations

import pytest

from potluck.hub.access import AccessMap
from potluck.hub.settings import HubSettings

GROUPS = frozenset({"g1", "g2"})


def access() -> AccessMap:
    access = AccessMap("admin", "default")
    access.set_alias("g1", "sonnet", ("qwen3-coder",))
    access.set_alias("g2", "fast", ("llama-1b",))
    access.hub_aliases = {"haiku": ("llama-3b",), "fast": ("hub-choice",), "big": ("llama-70b", "qwen-72b")}
    return access


@pytest.mark.parametrize(
    ("asked", "served"),
    [
        ("claude-sonnet-4-5-20250929", ("qwen3-coder",)),  # a group alias of the family
        ("claude-3-5-sonnet-latest", ("qwen3-coder",)),
        ("claude-haiku-4-5-20251001", ("llama-3b",)),  # the hub's alias of the family
        ("claude-opus-4-1", ("claude-opus-4-1",)),  # nothing stands for opus: the name as asked
        ("fast", ("llama-1b",)),  # a group's alias wins over the hub's of the same name
        ("big", ("llama-70b", "qwen-72b")),
        ("qwen3-coder", ("qwen3-coder",)),
    ],
)
def test_names_resolve_through_groups_then_the_hub(asked: str, served: tuple[str, ...]) -> None:
    assert access().resolve(asked, GROUPS) == served


def test_a_group_the_key_does_not_reach_lends_it_no_alias() -> None:
    assert access().resolve("claude-sonnet-4-5", frozenset({"g2"})) == ("claude-sonnet-4-5",)


def test_the_hubs_aliases_are_listed_with_the_groups() -> None:
    assert access().aliases_for(frozenset({"g2"})) == {
        "big": ("llama-70b", "qwen-72b"),
        "fast": ("llama-1b",),
        "haiku": ("llama-3b",),
    }


def test_model_alias_settings_parse_and_refuse_malformed_ones() -> None:
    settings = HubSettings(aliases=("sonnet=qwen3-coder|llama-70b", "haiku = llama-3b"))
    assert settings.parsed_model_aliases() == {"sonnet": ("qwen3-coder", "llama-70b"), "haiku": ("llama-3b",)}
    for bad in ("sonnet", "=x", "sonnet=", "sonnet=|"):
        with pytest.raises(ValueError, match="--model-alias"):
            HubSettings(aliases=(bad,)).validate()
