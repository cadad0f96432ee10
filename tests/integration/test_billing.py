"""Billing on SQLite and PostgreSQL: exact decimals, no overdraft under concurrency, refunds."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from server.billing import Charge, do_charge, do_refund, do_topup, seed_prices
from server.context import Services
from server.errors import AppError, ErrorCode
from server.store import billing as billing_store
from server.store.models import BalanceTransaction, ServicePrice
from server.store.users import UserRecord


@pytest.fixture
def priced(services: Services) -> Services:
    seed_prices(services.db)
    return services


def _balance(services: Services, user_id: int) -> Decimal:
    with services.db.read() as session:
        return billing_store.get_balance(session, user_id)


def test_seeding_adds_missing_prices_and_keeps_changed_ones(services: Services) -> None:
    assert seed_prices(services.db) == 4
    with services.db.write() as session:
        session.execute(
            update(ServicePrice)
            .where(ServicePrice.service_type == "widget_message")
            .values(price=Decimal("1.25"))
        )
    assert seed_prices(services.db) == 0
    with services.db.read() as session:
        price = billing_store.get_price(session, "widget_message")
    assert price is not None and price.price == Decimal("1.25")


def test_charge_debits_price_and_writes_ledger(priced: Services, user: UserRecord, admin: UserRecord) -> None:
    do_topup(priced.db, admin.id, user.id, Decimal("12.34"), "start")
    charge = do_charge(priced.db, user.id, "widget_message", related_id=77)
    assert charge.amount == Decimal("5.00")
    assert charge.balance_after == Decimal("7.34")
    with priced.db.read() as session:
        entry = billing_store.get_ledger_entry(session, charge.transaction_id)
    assert entry is not None
    assert (entry.amount, entry.balance_before, entry.balance_after) == (
        Decimal("-5.00"), Decimal("12.34"), Decimal("7.34"))
    assert entry.transaction_type == "widget_message" and entry.related_id == 77


def test_charge_without_enough_balance_is_refused_with_402(priced: Services, user: UserRecord) -> None:
    with pytest.raises(AppError) as refused:
        do_charge(priced.db, user.id, "ai_message")
    assert refused.value.status == 402
    assert refused.value.code is ErrorCode.INSUFFICIENT_BALANCE
    assert refused.value.detail["needsTopUp"] is True
    assert refused.value.detail["required_amount"] == 5.0
    assert _balance(priced, user.id) == Decimal("0.00")


def test_service_without_price_cannot_be_charged(services: Services, user: UserRecord, admin: UserRecord) -> None:
    do_topup(services.db, admin.id, user.id, Decimal("100"), None)
    with pytest.raises(AppError) as refused:
        do_charge(services.db, user.id, "ai_message")  # prices not seeded
    assert refused.value.status == 402


def test_refund_gives_the_charge_back_once(priced: Services, user: UserRecord, admin: UserRecord) -> None:
    do_topup(priced.db, admin.id, user.id, Decimal("5.00"), None)
    charge = do_charge(priced.db, user.id, "widget_message")
    assert _balance(priced, user.id) == Decimal("0.00")
    assert do_refund(priced.db, charge, "cancelled by takeover") is True
    assert do_refund(priced.db, charge) is False
    assert _balance(priced, user.id) == Decimal("5.00")
    with priced.db.read() as session:
        refunds = session.execute(
            select(BalanceTransaction).where(BalanceTransaction.transaction_type == "refund")
        ).scalars().all()
    assert len(refunds) == 1 and refunds[0].related_id == charge.transaction_id


def test_topup_is_exact_decimal_and_never_negative(services: Services, user: UserRecord, admin: UserRecord) -> None:
    do_topup(services.db, admin.id, user.id, Decimal("10.10"), None)
    result = do_topup(services.db, admin.id, user.id, Decimal("0.20"), None)
    assert result["new_balance"] == Decimal("10.30")
    assert result["old_balance"] == Decimal("10.10")
    with pytest.raises(AppError) as refused:
        do_topup(services.db, admin.id, user.id, Decimal("-10.31"), None)
    assert refused.value.status == 400
    assert _balance(services, user.id) == Decimal("10.30")


def test_topup_of_unknown_user_is_404(services: Services, admin: UserRecord) -> None:
    with pytest.raises(AppError) as refused:
        do_topup(services.db, admin.id, 987654, Decimal("1"), None)
    assert refused.value.status == 404


def test_fifty_concurrent_charges_against_ten_prices_exactly_ten_succeed(
    priced: Services, make_user: Callable[..., UserRecord], admin: UserRecord
) -> None:
    payer = make_user()
    do_topup(priced.db, admin.id, payer.id, Decimal("50.00"), None)
    start = threading.Barrier(50)
    charges: list[Charge] = []
    refusals: list[int] = []
    lock = threading.Lock()

    def attempt() -> None:
        start.wait(timeout=30)
        try:
            charge = do_charge(priced.db, payer.id, "widget_message")
        except AppError as exc:
            with lock:
                refusals.append(exc.status)
            return
        with lock:
            charges.append(charge)

    threads = [threading.Thread(target=attempt) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(charges) == 10
    assert refusals == [402] * 40
    assert _balance(priced, payer.id) == Decimal("0.00")
    with priced.db.read() as session:
        ledger = billing_store.list_ledger(session, payer.id)
    debits = [entry for entry in ledger if entry.transaction_type == "widget_message"]
    assert len(debits) == 10
    assert all(entry.balance_after >= 0 for entry in ledger)
