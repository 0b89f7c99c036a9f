"""Click options generated from a settings dataclass: one per field, with its help and environment variable.

The fields of `HubSettings` and `AgentSettings` describe themselves (`potluck._shared.setting`):
`settings_options(cls)` turns them into the options of `potluck hub` / `potluck agent`, in field
order, and `build(cls, values)` turns what click parsed back into the settings object.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from potluck._shared.setting import Setting, described, env_var, option_name

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
    from click.types import OptionHelpExtra

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S", bound="DataclassInstance")


class SettingOption(click.Option):
    """An option that can show a computed default in words: ``[default: $XDG_DATA_HOME/potluck/hub]``."""

    def __init__(self, *args: Any, default_text: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_text = default_text

    def get_help_extra(self, ctx: click.Context) -> OptionHelpExtra:
        extra = super().get_help_extra(ctx)
        if self.default_text:
            extra["default"] = self.default_text
        return extra


def value_type(hint: Any) -> Any:
    """The type one option value has: ``Path`` for ``Path | None``, ``str`` for ``tuple[str, ...]``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) is tuple:
        hint = typing.get_args(hint)[0]
    return hint


def _click_type(meta: Setting, hint: Any) -> click.ParamType[Any, Any]:
    if meta.choices:
        return click.Choice(meta.choices, case_sensitive=False)
    if meta.parse is not None:
        return click.STRING  # parsed in build(), so that a bad value names the option the same way everywhere
    kind = value_type(hint)
    if kind is Path:
        return click.Path(path_type=Path, file_okay=not meta.directory, dir_okay=meta.directory)
    scalars: dict[type, click.ParamType[Any, Any]] = {int: click.INT, float: click.FLOAT, str: click.STRING}
    return scalars[kind]


def make_option(cls: type[DataclassInstance], field: dataclasses.Field[Any]) -> SettingOption:
    """The click option of one settings field."""
    meta = described(field)
    hint = typing.get_type_hints(cls)[field.name]
    decls = [meta.option or option_name(field), field.name]
    attrs: dict[str, Any] = {
        "help": meta.help,
        "envvar": env_var(getattr(cls, "ENV_PREFIX", ""), field),
        "show_envvar": True,
        "default_text": meta.default_text,
    }
    if meta.metavar:
        attrs["metavar"] = meta.metavar
    if value_type(hint) is bool:
        if "/" not in decls[0]:  # --x/--no-x is a flag by its declaration
            attrs["is_flag"] = True
        attrs["default"] = field.default
    else:
        attrs["type"] = _click_type(meta, hint)
        attrs["multiple"] = meta.multiple
        simple = field.default is not None and not meta.multiple and meta.parse is None
        if simple and field.default is not dataclasses.MISSING:
            attrs["default"] = field.default
            attrs["show_default"] = True
    return SettingOption(decls, **attrs)


def settings_options(cls: type[DataclassInstance]) -> Callable[[F], F]:
    """Decorator: one option per field of ``cls``, in field order."""

    def decorate(command: F) -> F:
        params = getattr(command, "__click_params__", [])
        # click reverses __click_params__ when it builds the command: append them last-first.
        params.extend(make_option(cls, field) for field in reversed(dataclasses.fields(cls)))
        command.__click_params__ = params  # type: ignore[attr-defined]
        return command

    return decorate


def _parsed(meta: Setting, field: dataclasses.Field[Any], text: str) -> Any:
    if meta.parse is None:
        return text
    try:
        return meta.parse(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{option_name(field)}'") from None


def build(cls: type[S], values: Mapping[str, Any]) -> S:
    """The settings object from the options' values; a value that does not parse is a usage error.

    A field whose option was not given (None) keeps the dataclass's default.
    """
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        meta = described(field)
        value = values[field.name]
        if meta.multiple:
            items = tuple(_parsed(meta, field, item) for item in value or ())
            value = ",".join(items) if hints[field.name] is str else items
        elif value is not None:
            value = _parsed(meta, field, value)
        if value is None and field.default is not None:
            continue
        kwargs[field.name] = value
    return cls(**kwargs)
