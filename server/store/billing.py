"""Balances, the ledger and service prices in the store.

Money is `Decimal` end to end (NUMERIC(12,2) columns). Every balance change is ONE conditional
UPDATE … RETURNING, so concurrent debits can never take a balance below zero on SQLite or
PostgreSQL, followed by a ledger row in the same transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from server.errors import AppError, ErrorCode
from server.store.models import BalanceTransaction, ServicePrice, UserBalance
from server.store.types import utcnow

CENT = Decimal("0.01")
REFUND = "refund"

DEFAULT_PRICES: dict[str, tuple[Decimal, str]] = {
    "ai_message": (Decimal("5.00"), "AI answer in the dashboard test chat"),
    "widget_message": (Decimal("5.00"), "AI answer to a website visitor"),
    "bot_message": (Decimal("5.00"), "AI answer to a Telegram visitor"),
    "document_upload": (Decimal("5.00"), "Document upload and indexing"),
}


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: int
    user_id: int
    amount: Decimal
    transaction_type: str
    description: str | None
    balance_before: Decimal
    balance_after: Decimal
    related_id: int | None
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class PriceRecord:
    service_type: str
    price: Decimal
    description: str | None
    is_active: bool


def seed_missing_prices(session: Session) -> int:
    """Insert default prices that do not exist yet; never touches an admin's prices."""
    existing = set(session.execute(select(ServicePrice.service_type)).scalars())
    added = 0
    for service_type, (price, description) in DEFAULT_PRICES.items():
        if service_type not in existing:
            session.add(
                ServicePrice(service_type=service_type, price=price, description=description)
            )
            added += 1
    session.flush()
    return added


def get_price(session: Session, service_type: str) -> PriceRecord | None:
    row = session.execute(
        select(ServicePrice).where(ServicePrice.service_type == service_type)
    ).scalar_one_or_none()
    if row is None:
        return None
    return PriceRecord(row.service_type, Decimal(row.price), row.description, row.is_active)


def ensure_balance_row(session: Session, user_id: int) -> None:
    exists = session.execute(
        select(UserBalance.id).where(UserBalance.user_id == user_id)
    ).first()
    if exists is None:
        session.add(UserBalance(user_id=user_id))
        session.flush()


def get_balance(session: Session, user_id: int) -> Decimal:
    value = session.execute(
        select(UserBalance.balance).where(UserBalance.user_id == user_id)
    ).scalar_one_or_none()
    return Decimal(value) if value is not None else Decimal("0.00")


def apply_delta(
    session: Session,
    user_id: int,
    delta: Decimal,
    *,
    spent_delta: Decimal = Decimal("0"),
    topped_up_delta: Decimal = Decimal("0"),
) -> Decimal | None:
    """Add `delta` unless the balance would go below zero; the new balance, or None."""
    delta = delta.quantize(CENT)
    balances = UserBalance.__table__.c  # Core, not the ORM's bulk-update machinery
    statement = (
        update(UserBalance.__table__)
        .where(balances.user_id == user_id, balances.balance + delta >= 0)
        .values(
            balance=balances.balance + delta,
            total_spent=balances.total_spent + spent_delta,
            total_topped_up=balances.total_topped_up + topped_up_delta,
            updated_at=utcnow(),
        )
        .returning(balances.balance)
    )
    new_balance = session.execute(statement).scalar_one_or_none()
    return Decimal(new_balance).quantize(CENT) if new_balance is not None else None


def add_ledger_entry(
    session: Session,
    user_id: int,
    amount: Decimal,
    transaction_type: str,
    balance_after: Decimal,
    *,
    description: str | None = None,
    related_id: int | None = None,
) -> LedgerEntry:
    row = BalanceTransaction(
        user_id=user_id,
        amount=amount.quantize(CENT),
        transaction_type=transaction_type,
        description=description,
        balance_before=(balance_after - amount).quantize(CENT),
        balance_after=balance_after,
        related_id=related_id,
    )
    session.add(row)
    session.flush()
    return _entry(row)


def get_ledger_entry(session: Session, entry_id: int) -> LedgerEntry | None:
    row = session.get(BalanceTransaction, entry_id)
    return _entry(row) if row is not None else None


def list_ledger(session: Session, user_id: int, limit: int = 100) -> list[LedgerEntry]:
    rows = session.execute(
        select(BalanceTransaction)
        .where(BalanceTransaction.user_id == user_id)
        .order_by(BalanceTransaction.id.desc())
        .limit(limit)
    ).scalars()
    return [_entry(row) for row in rows]


def _entry(row: BalanceTransaction) -> LedgerEntry:
    return LedgerEntry(
        id=row.id,
        user_id=row.user_id,
        amount=Decimal(row.amount),
        transaction_type=row.transaction_type,
        description=row.description,
        balance_before=Decimal(row.balance_before),
        balance_after=Decimal(row.balance_after),
        related_id=row.related_id,
        created_at=row.created_at,
    )


# --- charging (one transaction each; the caller owns the session) -----------------------------


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


# Prebuilt once: `charge` runs before every AI answer, and building a statement per call costs
# more than executing it (measured: ~0.6 ms to build a one-row SELECT, 0.2 ms to run an UPDATE).
_prices = ServicePrice.__table__.c
_balances = UserBalance.__table__.c
_ledger = BalanceTransaction.__table__
_PRICE = select(_prices.price, _prices.description).where(
    _prices.service_type == bindparam("service_type"), _prices.is_active.is_(True)
)
_DEBIT = (
    update(UserBalance.__table__)
    .where(_balances.user_id == bindparam("uid"), _balances.balance >= bindparam("amount"))
    .values(
        balance=_balances.balance - bindparam("amount"),
        total_spent=_balances.total_spent + bindparam("amount"),
        updated_at=bindparam("now"),
    )
    .returning(_balances.balance)
)
_LEDGER_ROW = insert(_ledger).returning(_ledger.c.id)


def charge(
    session: Session, user_id: int, service_type: str, *, related_id: int | None = None
) -> Charge:
    """Debit the service's price or raise the 402; never takes a balance below zero."""
    price = session.execute(_PRICE, {"service_type": service_type}).first()
    if price is None:
        # A service without an active price cannot be sold (spec §9.7).
        raise insufficient_balance(get_balance(session, user_id), None)
    amount = Decimal(price.price).quantize(CENT)
    now = utcnow()
    new_balance = session.execute(_DEBIT, {"uid": user_id, "amount": amount, "now": now}).scalar()
    if new_balance is None:
        ensure_balance_row(session, user_id)
        raise insufficient_balance(get_balance(session, user_id), amount)
    new_balance = Decimal(new_balance).quantize(CENT)
    entry_id = session.execute(
        _LEDGER_ROW,
        {
            "user_id": user_id, "amount": -amount, "transaction_type": service_type,
            "description": price.description, "balance_before": new_balance + amount,
            "balance_after": new_balance, "related_id": related_id, "created_at": now,
        },
    ).scalar_one()
    return Charge(entry_id, user_id, service_type, amount, new_balance)


def refund(session: Session, paid: Charge, reason: str) -> bool:
    """Give a charge back once; False when it was already refunded."""
    already = session.execute(
        select(BalanceTransaction.id).where(
            BalanceTransaction.user_id == paid.user_id,
            BalanceTransaction.transaction_type == REFUND,
            BalanceTransaction.related_id == paid.transaction_id,
        )
    ).first()
    if already is not None:
        return False
    new_balance = apply_delta(session, paid.user_id, paid.amount, spent_delta=-paid.amount)
    assert new_balance is not None  # a credit cannot make the balance negative
    add_ledger_entry(
        session, paid.user_id, paid.amount, REFUND, new_balance,
        description=f"Refund of {paid.service_type}: {reason}", related_id=paid.transaction_id,
    )
    return True
