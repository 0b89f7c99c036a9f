"""`potluck completion bash|zsh|fish`: the shell completion script, from click's own completion machinery."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

COMPLETE_VAR = "_POTLUCK_COMPLETE"
"""The variable click's completion scripts set when they ask `potluck` for candidates."""
SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL.

    \b
    bash:  eval "$(potluck completion bash)"    (in ~/.bashrc)
    zsh:   eval "$(potluck completion zsh)"     (in ~/.zshrc)
    fish:  potluck completion fish > ~/.config/fish/completions/potluck.fish
    """
    complete = get_completion_class(shell)
    if complete is None:  # pragma: no cover - every name in SHELLS is one of click's
        raise click.UsageError(f"no completion for {shell}")
    click.echo(complete(ctx.find_root().command, {}, "potluck", COMPLETE_VAR).source())


COMMANDS = (completion,)
