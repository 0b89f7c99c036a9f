"""One description per setting: its help, CLI option and environment variable live in the field's metadata.

`HubSettings` and `AgentSettings` declare every field with `setting(...)`. The CLI builds its options
from these (`potluck.cli.options`), and `scripts/gen_config_docs.py` the tables of
docs/configuration.md, so each setting is written once. Nothing here knows click: the hub and agent
layers must not import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_KEY = "potluck.setting"


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """How one settings field is given on the command line and in the environment."""

    help: str
    """A sentence or two for ``--help``; docs/configuration.md shows it followed by ``details``."""
    details: str = ""
    """More for docs/configuration.md only (Markdown)."""
    option: str = ""
    """The option's declaration when it is not ``--<field-name>``: ``--hub``, ``--auto/--no-auto``."""
    env: str = ""
    """The environment variable when it is not ``<ENV_PREFIX><FIELD>``: a name kept from before."""
    metavar: str = ""
    choices: tuple[str, ...] = ()
    default_text: str = ""
    """The default in words, where it is computed (``$XDG_DATA_HOME/potluck/hub``) or absent."""
    multiple: bool = False
    """The option may be repeated; the field gets every value (a ``str`` field: joined with commas)."""
    parse: Callable[[str], Any] | None = None
    """Turns the option's text (each value, with ``multiple``) into the field's; raises ValueError."""
    directory: bool = False
    """A ``Path`` field that names a directory rather than a file."""


def setting(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None, **described: Any) -> Any:
    """A dataclass field described by a `Setting` (keyword arguments); no default means required."""
    metadata = {_KEY: Setting(**described)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def described(field: dataclasses.Field[Any]) -> Setting:
    """The `Setting` of a field declared with `setting(...)`."""
    found = field.metadata.get(_KEY)
    if not isinstance(found, Setting):
        raise TypeError(f"settings field {field.name} is not declared with setting(...)")
    return found


def env_var(prefix: str, field: dataclasses.Field[Any]) -> str:
    """The environment variable that sets this field."""
    return described(field).env or prefix + field.name.upper()


def option_name(field: dataclasses.Field[Any]) -> str:
    """The field's main CLI option (``--auto`` for ``--auto/--no-auto``)."""
    return (described(field).option or "--" + field.name.replace("_", "-")).partition("/")[0]
