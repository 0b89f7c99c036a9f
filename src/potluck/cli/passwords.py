"""Passwords on the command line: from a hidden prompt or standard input's first line, never echoed,
never an option (where ``ps`` and shell history would keep them)."""

from __future__ import annotations

import sys

import click

password_stdin_option = click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of standard input."
)


def read_password(from_stdin: bool, *, confirm: bool) -> str:
    """The password from stdin's first line, or from a hidden prompt; never echoed."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n").rstrip("\r")
        if not password:
            raise click.UsageError("--password-stdin: standard input holds no password")
        return password
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=confirm))


def warn_if_insecure(hub: str) -> None:
    """A warning on stderr before a password crosses the network in plain HTTP."""
    from potluck.cli.client import is_insecure

    if is_insecure(hub):
        click.echo(
            f"warning: {hub} is plain HTTP off this machine; the password crosses the network unencrypted", err=True
        )
