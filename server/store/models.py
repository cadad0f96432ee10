"""Tables of the whole domain model (spec/API.md §7), the same on SQLite and PostgreSQL.

Every tenant row hangs off `users.id` with ON DELETE CASCADE, so deleting an account removes
its data in one statement; rows that merely *point* at a user of another tenant (an assigned
operator, an audit actor, the admin who last edited a setting) use SET NULL instead, so one
account's deletion never destroys another tenant's history. Later issues add behaviour, not
tables: every table named by the spec is here from the first migration.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text as sql_text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from server.store.types import UTCDateTime, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = BigInteger().with_variant(Integer(), "sqlite")
Money = Numeric(12, 2)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON(), Decimal: Money}


def _owner_fk(nullable: bool = False) -> Mapped[Any]:
    return mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=nullable
    )


def _pointer_fk() -> Mapped[Any]:
    return mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True)


def _created() -> Mapped[dt.datetime]:
    return mapped_column(default=utcnow)


# --- accounts ------------------------------------------------------------------------------


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    hashed_password: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")
    status: Mapped[str] = mapped_column(String(16), default="active")
    first_name: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_activity: Mapped[dt.datetime | None]
    is_email_confirmed: Mapped[bool] = mapped_column(Boolean, default=False)
    email_code_hash: Mapped[str | None] = mapped_column(String(128))
    email_code_expires: Mapped[dt.datetime | None]
    email_code_attempts: Mapped[int] = mapped_column(Integer, default=0)
    password_reset_hash: Mapped[str | None] = mapped_column(String(128), index=True)
    password_reset_expires: Mapped[dt.datetime | None]
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    onboarding_completed: Mapped[bool] = mapped_column(Boolean, default=False)
    onboarding_step: Mapped[int] = mapped_column(Integer, default=0)
    onboarding_started_at: Mapped[dt.datetime | None]
    onboarding_completed_at: Mapped[dt.datetime | None]
    onboarding_skipped: Mapped[bool] = mapped_column(Boolean, default=False)
    first_bot_created: Mapped[bool] = mapped_column(Boolean, default=False)
    first_message_sent: Mapped[bool] = mapped_column(Boolean, default=False)
    tutorial_tips_shown: Mapped[list[str]] = mapped_column(JSON, default=list)
    welcome_bonus_received: Mapped[bool] = mapped_column(Boolean, default=False)


class TokenRevocation(Base):
    """A JWT `jti` that must no longer be accepted (logout, refresh rotation)."""

    __tablename__ = "token_revocations"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int | None] = _owner_fk(nullable=True)
    token_type: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    revoked_at: Mapped[dt.datetime] = _created()


class AuditLog(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int | None] = _pointer_fk()
    action: Mapped[str] = mapped_column(String(64), index=True)
    success: Mapped[bool] = mapped_column(Boolean, default=True)
    ip: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = _created()


class MailOutbox(Base):
    """Every e-mail the server sends; the dispatcher delivers and retries from here."""

    __tablename__ = "mail_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    to_addr: Mapped[str] = mapped_column(String(255), index=True)
    subject: Mapped[str] = mapped_column(String(255))
    body_text: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32), default="generic")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    sent_at: Mapped[dt.datetime | None]

    __table_args__ = (Index("ix_mail_outbox_due", "status", "next_attempt_at"),)


# --- assistants, knowledge ---------------------------------------------------------------


class Assistant(Base):
    __tablename__ = "assistants"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = _owner_fk()
    name: Mapped[str] = mapped_column(String(200))
    ai_model: Mapped[str] = mapped_column(String(64), default="gpt-4o-mini")
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    website_integration_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    allow_tokenless_widget: Mapped[bool] = mapped_column(Boolean, default=False)
    allowed_domains: Mapped[str] = mapped_column(Text, default="")
    knowledge_version: Mapped[int] = mapped_column(Integer, default=1)
    widget_version: Mapped[int] = mapped_column(Integer, default=1)
    operator_name: Mapped[str | None] = mapped_column(String(100))
    business_name: Mapped[str | None] = mapped_column(String(200))
    avatar_url: Mapped[str | None] = mapped_column(String(1000))
    widget_theme: Mapped[str | None] = mapped_column(String(32))
    widget_settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    fallback_text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = _owner_fk()
    assistant_id: Mapped[int | None] = mapped_column(
        ForeignKey("assistants.id", ondelete="SET NULL"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    original_filename: Mapped[str | None] = mapped_column(String(255))
    mime_type: Mapped[str | None] = mapped_column(String(128))
    storage_key: Mapped[str | None] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    doc_hash: Mapped[str | None] = mapped_column(String(64))
    summary: Mapped[str | None] = mapped_column(Text)
    upload_date: Mapped[dt.datetime] = _created()


class UserKnowledge(Base):
    __tablename__ = "user_knowledge"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = _owner_fk()
    assistant_id: Mapped[int | None] = mapped_column(
        ForeignKey("assistants.id", ondelete="CASCADE"), index=True
    )
    doc_id: Mapped[int | None] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), index=True
    )
    content: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(32), default="original")
    doc_type: Mapped[str | None] = mapped_column(String(64))
    importance: Mapped[int] = mapped_column(Integer, default=10)
    usage_count: Mapped[int] = mapped_column(Integer, default=0)
    last_used: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class QaKnowledge(Base):
    __tablename__ = "qa_knowledge"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = _owner_fk()
    assistant_id: Mapped[int | None] = mapped_column(
        ForeignKey("assistants.id", ondelete="CASCADE"), index=True
    )
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(100))
    keywords: Mapped[str | None] = mapped_column(Text)
    importance: Mapped[int] = mapped_column(Integer, default=10)
    usage_count: Mapped[int] = mapped_column(Integer, default=0)
    last_used: Mapped[dt.datetime | None]
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class KnowledgeChunk(Base):
    """A retrievable piece of knowledge (spec §7.7 `knowledge_embeddings`).

    The full-text index over `chunk_text` and the optional embedding vector belong to the
    retrieval issue; the row shape is fixed here.
    """

    __tablename__ = "knowledge_embeddings"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = _owner_fk()
    assistant_id: Mapped[int | None] = mapped_column(
        ForeignKey("assistants.id", ondelete="CASCADE"), index=True
    )
    doc_id: Mapped[int | None] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), index=True
    )
    knowledge_id: Mapped[int | None] = mapped_column(
        ForeignKey("user_knowledge.id", ondelete="CASCADE"), index=True
    )
    qa_id: Mapped[int | None] = mapped_column(
        ForeignKey("qa_knowledge.id", ondelete="CASCADE"), index=True
    )
    chunk_index: Mapped[int] = mapped_column(Integer, default=0)
    chunk_text: Mapped[str] = mapped_column(Text)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    doc_type: Mapped[str | None] = mapped_column(String(64))
    importance: Mapped[int] = mapped_column(Integer, default=10)
    token_count: Mapped[int] = mapped_column(Integer, default=0)
    chunk_hash: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(32), default="document")
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# --- channels, dialogs -------------------------------------------------------------------


class BotInstance(Base):
    __tablename__ = "bot_instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = _owner_fk()
    assistant_id: Mapped[int | None] = mapped_column(
        ForeignKey("assistants.id", ondelete="CASCADE"), index=True
    )
    platform: Mapped[str] = mapped_column(String(16), default="telegram")
    bot_token: Mapped[str] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(16), default="stopped")
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()


class Dialog(Base):
    __tablename__ = "dialogs"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = _owner_fk()
    assistant_id: Mapped[int | None] = mapped_column(
        ForeignKey("assistants.id", ondelete="SET NULL"), index=True
    )
    bot_instance_id: Mapped[int | None] = mapped_column(
        ForeignKey("bot_instances.id", ondelete="SET NULL"), index=True
    )
    channel: Mapped[str] = mapped_column(String(16), default="web")
    started_at: Mapped[dt.datetime] = _created()
    ended_at: Mapped[dt.datetime | None]
    auto_response: Mapped[bool] = mapped_column(Boolean, default=False)
    first_response_time: Mapped[float | None]
    fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    is_taken_over: Mapped[bool] = mapped_column(Boolean, default=False)
    telegram_chat_id: Mapped[str | None] = mapped_column(String(64), index=True)
    telegram_username: Mapped[str | None] = mapped_column(String(255))
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))
    guest_id: Mapped[str | None] = mapped_column(String(128), index=True)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    handoff_status: Mapped[str] = mapped_column(String(16), default="none")
    handoff_requested_at: Mapped[dt.datetime | None]
    handoff_started_at: Mapped[dt.datetime | None]
    handoff_resolved_at: Mapped[dt.datetime | None]
    handoff_reason: Mapped[str | None] = mapped_column(String(32))
    assigned_manager_id: Mapped[int | None] = _pointer_fk()
    request_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_dialogs_handoff_queue", "handoff_status", "handoff_requested_at"),
        Index("ix_dialogs_owner_guest", "user_id", "guest_id", "assistant_id"),
    )


class DialogMessage(Base):
    __tablename__ = "dialog_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dialog_id: Mapped[int] = mapped_column(ForeignKey("dialogs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    sender: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    timestamp: Mapped[dt.datetime] = mapped_column(default=utcnow)
    delivered: Mapped[bool] = mapped_column(Boolean, default=False)
    message_kind: Mapped[str | None] = mapped_column(String(16))
    system_type: Mapped[str | None] = mapped_column(String(32))
    author_user_id: Mapped[int | None] = _pointer_fk()
    client_message_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("dialog_id", "seq"),
        Index(
            "uq_dialog_messages_client_id",
            "dialog_id",
            "client_message_id",
            unique=True,
            sqlite_where=sql_text("client_message_id IS NOT NULL"),
            postgresql_where=sql_text("client_message_id IS NOT NULL"),
        ),
    )


class HandoffAudit(Base):
    __tablename__ = "handoff_audit"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dialog_id: Mapped[int] = mapped_column(
        ForeignKey("dialogs.id", ondelete="CASCADE"), index=True
    )
    from_status: Mapped[str] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[int | None] = _pointer_fk()
    reason: Mapped[str | None] = mapped_column(String(32))
    request_id: Mapped[str | None] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer, default=0)
    extra_data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = _created()


class OperatorPresence(Base):
    __tablename__ = "operator_presence"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    status: Mapped[str] = mapped_column(String(16), default="offline")
    last_heartbeat: Mapped[dt.datetime | None]
    max_active_chats_web: Mapped[int] = mapped_column(Integer, default=3)
    max_active_chats_telegram: Mapped[int] = mapped_column(Integer, default=5)
    active_chats: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class HandoffMailMark(Base):
    """When the owner was last e-mailed about a dialog's handoff, per kind of mail.

    The throttle of `server/handoff_mail.py`: claiming a mark is one conditional insert or
    update, so two processes can never both send the same notification.
    """

    __tablename__ = "handoff_mail_marks"

    dialog_id: Mapped[int] = mapped_column(
        ForeignKey("dialogs.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    sent_at: Mapped[dt.datetime]


# --- legacy per-user tokens ----------------------------------------------------------------


class TelegramToken(Base):
    __tablename__ = "telegram_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    token: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()


class OpenAIToken(Base):
    __tablename__ = "openai_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    token: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()


class IntegrationToken(Base):
    __tablename__ = "integration_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    token_prefix: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[int | None] = _owner_fk(nullable=True)
    created_at: Mapped[dt.datetime] = _created()


# --- AI keys, settings, billing ---------------------------------------------------------------


class AiTokenPool(Base):
    __tablename__ = "ai_token_pool"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token: Mapped[str] = mapped_column(String(500), unique=True)
    base_url: Mapped[str | None] = mapped_column(String(500))
    model_access: Mapped[str] = mapped_column(Text, default="gpt-4o,gpt-4o-mini")
    daily_limit: Mapped[int] = mapped_column(Integer, default=10000)
    monthly_limit: Mapped[int] = mapped_column(Integer, default=300000)
    current_daily_usage: Mapped[int] = mapped_column(Integer, default=0)
    current_monthly_usage: Mapped[int] = mapped_column(Integer, default=0)
    last_reset_daily: Mapped[dt.datetime] = _created()
    last_reset_monthly: Mapped[dt.datetime] = _created()
    priority: Mapped[int] = mapped_column(Integer, default=1)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_used: Mapped[dt.datetime | None]
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[dt.datetime | None]
    rested_until: Mapped[dt.datetime | None]
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()


class AiTokenUsage(Base):
    __tablename__ = "ai_token_usage"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token_id: Mapped[int | None] = mapped_column(
        ForeignKey("ai_token_pool.id", ondelete="SET NULL"), index=True
    )
    user_id: Mapped[int | None] = _owner_fk(nullable=True)
    assistant_id: Mapped[int | None] = mapped_column(
        ForeignKey("assistants.id", ondelete="SET NULL")
    )
    provider: Mapped[str | None] = mapped_column(String(32))
    model_used: Mapped[str] = mapped_column(String(64))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    request_type: Mapped[str] = mapped_column(String(16), default="chat")
    response_time: Mapped[float | None]
    success: Mapped[bool] = mapped_column(Boolean, default=True)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class SystemSetting(Base):
    __tablename__ = "system_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    category: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(100))
    value: Mapped[str | None] = mapped_column(Text)
    data_type: Mapped[str] = mapped_column(String(16), default="string")
    is_sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(Text)
    default_value: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[int | None] = _pointer_fk()

    __table_args__ = (UniqueConstraint("category", "key"),)


class UserBalance(Base):
    __tablename__ = "user_balances"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    balance: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    total_spent: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    total_topped_up: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class BalanceTransaction(Base):
    __tablename__ = "balance_transactions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = _owner_fk()
    amount: Mapped[Decimal] = mapped_column(Money)
    transaction_type: Mapped[str] = mapped_column(String(32))
    description: Mapped[str | None] = mapped_column(Text)
    balance_before: Mapped[Decimal] = mapped_column(Money)
    balance_after: Mapped[Decimal] = mapped_column(Money)
    related_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class ServicePrice(Base):
    __tablename__ = "service_prices"

    id: Mapped[int] = mapped_column(primary_key=True)
    service_type: Mapped[str] = mapped_column(String(32), unique=True)
    price: Mapped[Decimal] = mapped_column(Money)
    description: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
