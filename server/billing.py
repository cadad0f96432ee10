"""Charging the tenant for what their assistants do (spec §9.7, DESIGN.md §7).

`do_charge` debits the service price BEFORE the work with one conditional update (never below
zero, whatever runs concurrently) and a ledger row; `do_refund` gives a failed or cancelled
answer's charge back with a `refund` row, once. `do_topup` is the admin's exact-decimal
adjustment.
"""

from __future__ import annotations

from decimal import Decimal

from server.errors import AppError, ErrorCode, not_found
from server.store import billing as billing_store
from server.store import users as user_store
from server.store.billing import Charge
from server.store.db import Database

ADMIN_ADJUSTMENT = "admin_adjustment"

__all__ = ["Charge", "do_charge", "do_refund", "do_topup", "seed_prices"]


def do_charge(
    db: Database, user_id: int, service_type: str, *, related_id: int | None = None
) -> Charge:
    with db.write() as session:
        return billing_store.charge(session, user_id, service_type, related_id=related_id)


def do_refund(db: Database, paid: Charge, reason: str = "answer failed") -> bool:
    """Give a charge back; False when it was already refunded."""
    with db.write() as session:
        return billing_store.refund(session, paid, reason)


def do_topup(
    db: Database, admin_id: int, user_id: int, amount: Decimal, description: str | None
) -> dict[str, object]:
    with db.write() as session:
        if user_store.get_user(session, user_id) is None:
            raise not_found("User not found")
        billing_store.ensure_balance_row(session, user_id)
        old_balance = billing_store.get_balance(session, user_id)
        new_balance = billing_store.apply_delta(session, user_id, amount)
        if new_balance is None:
            raise AppError(
                ErrorCode.BAD_REQUEST, "The balance would become negative", status=400
            )
        note = description or "Balance adjustment"
        entry = billing_store.add_ledger_entry(
            session,
            user_id,
            amount,
            ADMIN_ADJUSTMENT,
            new_balance,
            description=f"{note} (by admin #{admin_id})",
        )
        user_store.add_audit(
            session, "balance_topup", user_id=admin_id, target_user_id=user_id,
            amount=str(amount),
        )
        return {
            "message": "Balance updated",
            "old_balance": old_balance,
            "new_balance": new_balance,
            "transaction_id": entry.id,
        }


def seed_prices(db: Database) -> int:
    with db.write() as session:
        return billing_store.seed_missing_prices(session)
