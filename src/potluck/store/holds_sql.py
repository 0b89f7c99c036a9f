"""The PostgreSQL statements of store/holds.py: a hold and a settlement, each one statement (one round trip).

Data-modifying CTEs: every part runs in the one statement's snapshot and sees the others only through
RETURNING, so each later part is conditional on the row the first one wrote. Balance rows are locked
in `store.ledger.lock_order` (``user:`` rows first), as every writer does, so writers never deadlock.
"""

from __future__ import annotations

from sqlalchemy import text

# One round trip: the debit, the transaction, its two entries and the hold account's credit, all or
# nothing. Every part is conditional on `debit` having matched a row (or on a zero amount).
#
# `debit` is read in `txn`'s FROM, not only in its WHERE: the user's row must be locked before the hold's
# (`lock_order`). With ``WHERE EXISTS (debit) OR :amount = 0``, a plan made for amount 0 folds the condition
# to true, `debit` then runs last (after `credit` locked the hold row), and a zero hold deadlocked with a
# paid hold of the same user placed at the same moment.
PG_HOLD = text(
    """
WITH debit AS (
    UPDATE ledger_accounts SET balance = balance - CAST(:amount AS BIGINT)
    WHERE account = CAST(:user_account AS VARCHAR) AND balance >= CAST(:amount AS BIGINT)
    RETURNING account
), txn AS (
    INSERT INTO ledger_txns (id, kind, request_id, reason, created_at, replica_id)
    SELECT CAST(:txn_id AS VARCHAR), 'hold', CAST(:request_id AS VARCHAR), NULL, CAST(:at AS TIMESTAMPTZ),
           CAST(:replica_id AS VARCHAR)
    FROM (SELECT count(*) AS debited FROM debit) AS d
    WHERE d.debited > 0 OR CAST(:amount AS BIGINT) = 0
    RETURNING id
), entries AS (
    INSERT INTO ledger_entries (txn_id, account, amount)
    SELECT id, CAST(:user_account AS VARCHAR), -CAST(:amount AS BIGINT) FROM txn
    UNION ALL SELECT id, CAST(:hold_account AS VARCHAR), CAST(:amount AS BIGINT) FROM txn
), credit AS (
    INSERT INTO ledger_accounts (account, balance)
    SELECT CAST(:hold_account AS VARCHAR), CAST(:amount AS BIGINT) FROM txn
    ON CONFLICT (account) DO UPDATE SET balance = ledger_accounts.balance + EXCLUDED.balance
)
SELECT count(*) FROM txn
"""
)

# One round trip, for a settler that knows the hold (the replica that placed it): the settle transaction
# goes in only if that exact hold exists and the request has no settle yet (ON CONFLICT: a concurrent
# settler waits on the unique index, then inserts nothing); its entries, balance changes and receipt
# follow only from the row that went in. Balance rows are locked in `lock_order`, as every writer does.
PG_SETTLE = text(
    """
WITH txn AS (
    INSERT INTO ledger_txns (id, kind, request_id, reason, created_at)
    SELECT CAST(:txn_id AS VARCHAR), 'settle', CAST(:request_id AS VARCHAR), CAST(:reason AS TEXT),
           CAST(:at AS TIMESTAMPTZ)
    WHERE EXISTS (
        SELECT 1 FROM ledger_txns h JOIN ledger_entries e ON e.txn_id = h.id
        WHERE h.request_id = CAST(:request_id AS VARCHAR) AND h.kind = 'hold'
          AND e.account = CAST(:hold_account AS VARCHAR) AND e.amount = CAST(:held AS BIGINT)
    )
    ON CONFLICT (request_id, kind) DO NOTHING
    RETURNING id
), moves AS (
    SELECT v.account, v.amount, v.n
    FROM unnest(CAST(:accounts AS VARCHAR[]), CAST(:amounts AS BIGINT[])) WITH ORDINALITY AS v(account, amount, n)
), entries AS (
    INSERT INTO ledger_entries (txn_id, account, amount)
    SELECT txn.id, moves.account, moves.amount FROM txn, moves ORDER BY moves.n
), balances AS (
    INSERT INTO ledger_accounts (account, balance)
    SELECT moves.account, moves.amount FROM txn, moves
    WHERE moves.amount <> 0 AND moves.account <> ALL(CAST(:untracked AS VARCHAR[])) ORDER BY moves.n
    ON CONFLICT (account) DO UPDATE SET balance = ledger_accounts.balance + EXCLUDED.balance
), receipt AS (
    INSERT INTO receipts (request_id, payload, signature, consumer_id, owner_id, created_at)
    SELECT CAST(:request_id AS VARCHAR), CAST(:payload AS TEXT), CAST(:signature AS VARCHAR),
           CAST(:consumer_id AS VARCHAR), CAST(:owner_id AS VARCHAR), CAST(:receipt_at AS TIMESTAMPTZ)
    FROM txn WHERE CAST(:has_receipt AS BOOLEAN)
    ON CONFLICT (request_id) DO NOTHING
)
SELECT count(*) FROM txn
"""
)
