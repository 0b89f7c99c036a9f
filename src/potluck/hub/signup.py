"""Accounts made in a browser: an invite link creates an account and joins its group in one step.

``--signup`` decides who may: `SignupMode.INVITE` (the default) lets an invite code do it,
`SignupMode.OPEN` also lets anyone sign up without one, `SignupMode.CLOSED` lets nobody (admins
create accounts). The invite is checked before the account is made, so a dead link makes nothing.
"""

from __future__ import annotations

from potluck.hub.accounts import Accounts, User
from potluck.hub.errors import PermissionDeniedError
from potluck.hub.invites import Invites
from potluck.hub.settings import SignupMode
from potluck.protocol.accounts import UserRole

__all__ = ["Signup"]


class Signup:
    """Self-service accounts, as ``--signup`` allows."""

    def __init__(self, accounts: Accounts, invites: Invites, mode: SignupMode) -> None:
        self._accounts = accounts
        self._invites = invites
        self.mode = mode

    @property
    def invite_creates_accounts(self) -> bool:
        """Whether ``/join/<code>`` offers a new account (otherwise only signed-in users may join)."""
        return self.mode != SignupMode.CLOSED

    @property
    def open(self) -> bool:
        """Whether ``/signup`` (no invite) is offered."""
        return self.mode == SignupMode.OPEN

    async def group_of(self, code: str) -> str:
        """The name of the group an invite code leads to; `InvalidInviteError` for a dead code."""
        return await self._invites.peek(code)

    async def join(self, username: str, password: str, code: str) -> tuple[User, str]:
        """A new account that has joined the invite's group: the user and the group's id."""
        if not self.invite_creates_accounts:
            raise PermissionDeniedError("This hub does not let invite links create accounts (--signup closed)")
        await self._invites.peek(code)
        user = await self._accounts.create_user(username, password, UserRole.USER)
        return user, await self._invites.redeem(user, code)

    async def sign_up(self, username: str, password: str) -> User:
        """A new account in no group (``--signup open`` only)."""
        if not self.open:
            raise PermissionDeniedError("This hub takes new accounts only through invite links")
        return await self._accounts.create_user(username, password, UserRole.USER)
