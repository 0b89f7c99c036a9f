"""Credits as users and the admin see them: balances, and the admin's grants from the mint.

The hold book (hub/holds.py) keeps the books; this service is the front door for people.
"""

from __future__ import annotations

from dataclasses import dataclass

from potluck.hub.access import AccessMap
from potluck.hub.accounting import Accounting
from potluck.hub.errors import InvalidRequestError, NotFoundError
from potluck.hub.pricing import MICRO


@dataclass(frozen=True, slots=True)
class Balance:
    """A user's micro-credits."""

    free: int
    """Spendable."""
    held: int
    """Held for the user's requests in flight."""


class Credits:
    def __init__(self, access: AccessMap, accounting: Accounting) -> None:
        self._access = access
        self._accounting = accounting

    async def balance(self, user_id: str) -> Balance:
        free, held = await self._accounting.book.balance(user_id)
        return Balance(free, held)

    async def grant(self, user_id: str, credits: float, reason: str) -> str:
        """Admin: add credits to a user's balance (from the mint, so the books still sum to zero); the
        transaction id. The API bounds ``credits`` (hub/bounds.py); an amount under one micro-credit is refused."""
        if user_id not in self._access.usernames:
            raise NotFoundError(f"No user {user_id}")
        amount = round(credits * MICRO)
        if amount <= 0:
            raise InvalidRequestError("`amount` must be a positive number of credits", param="amount")
        if not reason.strip():
            raise InvalidRequestError("say why in `reason`", param="reason")
        return await self._accounting.book.grant(user_id, amount, reason.strip()[:500])
