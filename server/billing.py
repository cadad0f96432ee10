"""Charging the tenant for what their assistants do (spec §9.7, DESIGN.md §7).

`do_charge` debits the service price BEFORE the work with one conditional update (never below
zero, whatever runs concurrently) and a ledger row; `do_refund` gives a failed or cancelled
answer's charge back with a `refund` row, once. `do_topup` is the admin's exact-decimal
adjustment.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from sqlalchemy import select

from server.errors import AppError, ErrorCode, not_found
from server.store import billing as billing_store
from server.store import users as user_store
from server.store.db import Database
from server.store.models import BalanceTransaction

REFUND = "refund"
ADMIN_ADJUSTMENT = "admin_adjustment"


@dataclasses.dataclass(frozen=True, slots=True)
class Charge:
    transaction_id: int
    user_id: int
    service_type: str
    amount: Decimal
    balance_after: Decimal


def insufficient_balance(current: Decimal, required: Decimal | None) -> AppError:
    return AppError(
        ErrorCode.INSUFFICIENT_BALANCE,
        {
            "error": "insufficient_balance",
            "message": "Not enough balance: please top up to continue",
            "current_balance": float(current),
            "required_amount": float(required) if required is not None else None,
            "needsTopUp": True,
        },
    )


def do_charge(
    db: Database, user_id: int, service_type: str, *, related_id: int | None = None
) -> Charge:
    with db.write() as session:
        price = billing_store.get_price(session, service_type)
        billing_store.ensure_balance_row(session, user_id)
        if price is None or not price.is_active:
            # A service without an active price cannot be sold (spec §9.7).
            raise insufficient_balance(billing_store.get_balance(session, user_id), None)
        new_balance = billing_store.apply_delta(
            session, user_id, -price.price, spent_delta=price.price
        )
        if new_balance is None:
            raise insufficient_balance(billing_store.get_balance(session, user_id), price.price)
        entry = billing_store.add_ledger_entry(
            session,
            user_id,
            -price.price,
            service_type,
            new_balance,
            description=price.description,
            related_id=related_id,
        )
        return Charge(entry.id, user_id, service_type, price.price, new_balance)


def do_refund(db: Database, charge: Charge, reason: str = "answer failed") -> bool:
    """Give a charge back; False when it was already refunded."""
    with db.write() as session:
        already = session.execute(
            select(BalanceTransaction.id).where(
                BalanceTransaction.user_id == charge.user_id,
                BalanceTransaction.transaction_type == REFUND,
                BalanceTransaction.related_id == charge.transaction_id,
            )
        ).first()
        if already is not None:
            return False
        new_balance = billing_store.apply_delta(
            session, charge.user_id, charge.amount, spent_delta=-charge.amount
        )
        assert new_balance is not None  # a credit cannot make the balance negative
        billing_store.add_ledger_entry(
            session,
            charge.user_id,
            charge.amount,
            REFUND,
            new_balance,
            description=f"Refund of {charge.service_type}: {reason}",
            related_id=charge.transaction_id,
        )
        return True


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
