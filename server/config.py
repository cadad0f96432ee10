"""Every setting of the server, read from environment variables (12-factor).

`Settings.from_env()` is pure: it only reads the mapping it is given. `load_settings()` also
fills in the signing secrets of the embedded default (generated once into `DATA_DIR`).
Names carry their units (`..._SECS`, `..._BYTES`, `..._MINUTES`). The README lists them all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from server.errors import ConfigError


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"not a boolean: {value!r}")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if not value > 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def _list(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return ()
    return tuple(item.strip() for item in raw.split(",") if item.strip())


# Module constants, not `cls.<field>`: on a slots dataclass that is a member descriptor.
DEFAULT_MAIL_FROM = "ReplyX <no-reply@localhost>"
DEFAULT_TELEGRAM_API_URL = "https://api.telegram.org"


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./data")
    database_url: str = ""
    redis_url: str | None = None
    secret_key: str | None = None
    site_secret: str | None = None
    service_api_token: str | None = None
    smtp_url: str | None = None
    mail_from: str = DEFAULT_MAIL_FROM
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    embeddings_model: str | None = None
    telegram_api_url: str = DEFAULT_TELEGRAM_API_URL
    public_url: str = ""
    frontend_url: str = ""
    admin_notify_emails: tuple[str, ...] = ()
    allow_private_fetch: bool = False
    dialog_idle_timeout_secs: int = 120
    max_live_dialog_actors: int = 2000
    operator_offline_threshold_seconds: int = 90
    operator_heartbeat_interval_seconds: int = 30
    handoff_email_cooldown_minutes: int = 10
    handoff_sla_web_minutes: int = 5
    handoff_sla_telegram_minutes: int = 3
    handoff_request_ttl_minutes: int = 10
    handoff_sweep_interval_secs: float = 30.0
    actor_ask_timeout_secs: float = 10.0
    answer_timeout_secs: float = 120.0
    ws_max_connections_per_dialog: int = 50
    ws_max_connections: int = 1000
    ws_outbound_queue: int = 256
    bus_prefix: str = "replyx:bus:"
    log_level: str = "INFO"
    log_format: str = "json"
    auto_migrate: bool = True
    jwt_access_token_expire_minutes: int = 60
    jwt_refresh_token_expire_days: int = 30
    email_code_ttl_secs: int = 900
    email_code_max_attempts: int = 5
    password_reset_ttl_secs: int = 86400
    rate_limit_enabled: bool = True
    trusted_proxy_ips: tuple[str, ...] = ()
    max_request_body_bytes: int = 1_048_576
    max_upload_bytes: int = 20 * 1024 * 1024
    mail_max_attempts: int = 8
    mail_retry_base_secs: int = 5
    mail_poll_interval_secs: int = 30
    smtp_timeout_secs: int = 15
    rate_limits: str = ""
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        host = env.get("HOST") or "127.0.0.1"
        port = _int(env, "PORT", 8000)
        data_dir = Path(env.get("DATA_DIR") or "./data")
        database_url = env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'replyx.db'}"
        public_url = (env.get("PUBLIC_URL") or f"http://{host}:{port}").rstrip("/")
        is_sqlite = database_url.startswith("sqlite")
        return cls(
            host=host,
            port=port,
            data_dir=data_dir,
            database_url=database_url,
            redis_url=env.get("REDIS_URL") or None,
            secret_key=env.get("SECRET_KEY") or None,
            site_secret=env.get("SITE_SECRET") or None,
            service_api_token=env.get("SERVICE_API_TOKEN") or None,
            smtp_url=env.get("SMTP_URL") or None,
            mail_from=env.get("MAIL_FROM") or DEFAULT_MAIL_FROM,
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            openai_base_url=env.get("OPENAI_BASE_URL") or None,
            embeddings_model=env.get("EMBEDDINGS_MODEL") or None,
            telegram_api_url=env.get("TELEGRAM_API_URL") or DEFAULT_TELEGRAM_API_URL,
            public_url=public_url,
            frontend_url=(env.get("FRONTEND_URL") or public_url).rstrip("/"),
            admin_notify_emails=_list(env.get("ADMIN_NOTIFY_EMAILS")),
            allow_private_fetch=_flag(env.get("ALLOW_PRIVATE_FETCH"), False),
            dialog_idle_timeout_secs=_int(env, "DIALOG_IDLE_TIMEOUT_SECS", 120),
            max_live_dialog_actors=_int(env, "MAX_LIVE_DIALOG_ACTORS", 2000),
            operator_offline_threshold_seconds=_int(
                env, "OPERATOR_OFFLINE_THRESHOLD_SECONDS", 90
            ),
            operator_heartbeat_interval_seconds=_int(
                env, "OPERATOR_HEARTBEAT_INTERVAL_SECONDS", 30
            ),
            handoff_email_cooldown_minutes=_int(env, "HANDOFF_EMAIL_COOLDOWN_MINUTES", 10),
            handoff_sla_web_minutes=_int(env, "HANDOFF_SLA_WEB_MINUTES", 5),
            handoff_sla_telegram_minutes=_int(env, "HANDOFF_SLA_TELEGRAM_MINUTES", 3),
            handoff_request_ttl_minutes=_int(env, "HANDOFF_REQUEST_TTL_MINUTES", 10),
            handoff_sweep_interval_secs=_float(env, "HANDOFF_SWEEP_INTERVAL_SECS", 30.0),
            actor_ask_timeout_secs=_float(env, "ACTOR_ASK_TIMEOUT_SECS", 10.0),
            answer_timeout_secs=_float(env, "ANSWER_TIMEOUT_SECS", 120.0),
            ws_max_connections_per_dialog=_int(env, "WS_MAX_CONNECTIONS_PER_DIALOG", 50),
            ws_max_connections=_int(env, "WS_MAX_CONNECTIONS", 1000),
            ws_outbound_queue=_int(env, "WS_OUTBOUND_QUEUE", 256),
            bus_prefix=env.get("BUS_PREFIX") or "replyx:bus:",
            log_level=(env.get("LOG_LEVEL") or "INFO").upper(),
            log_format=(env.get("LOG_FORMAT") or "json").lower(),
            auto_migrate=_flag(env.get("AUTO_MIGRATE"), is_sqlite),
            jwt_access_token_expire_minutes=_int(env, "JWT_ACCESS_TOKEN_EXPIRE_MINUTES", 60),
            jwt_refresh_token_expire_days=_int(env, "JWT_REFRESH_TOKEN_EXPIRE_DAYS", 30),
            email_code_ttl_secs=_int(env, "EMAIL_CODE_TTL_SECS", 900),
            email_code_max_attempts=_int(env, "EMAIL_CODE_MAX_ATTEMPTS", 5),
            password_reset_ttl_secs=_int(env, "PASSWORD_RESET_TTL_SECS", 86400),
            rate_limit_enabled=_flag(env.get("RATE_LIMIT_ENABLED"), True),
            trusted_proxy_ips=_list(env.get("TRUSTED_PROXY_IPS")),
            max_request_body_bytes=_int(env, "MAX_REQUEST_BODY_BYTES", 1_048_576),
            max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", 20 * 1024 * 1024),
            mail_max_attempts=_int(env, "MAIL_MAX_ATTEMPTS", 8),
            mail_retry_base_secs=_int(env, "MAIL_RETRY_BASE_SECS", 5),
            mail_poll_interval_secs=_int(env, "MAIL_POLL_INTERVAL_SECS", 30),
            smtp_timeout_secs=_int(env, "SMTP_TIMEOUT_SECS", 15),
            rate_limits=env.get("RATE_LIMITS") or "",
            argon2_time_cost=_int(env, "ARGON2_TIME_COST", 3),
            argon2_memory_kib=_int(env, "ARGON2_MEMORY_KIB", 65536),
            argon2_parallelism=_int(env, "ARGON2_PARALLELISM", 4),
        )

    def with_secrets(self) -> Settings:
        """Fill in missing signing secrets: generated once into DATA_DIR (embedded only)."""
        if self.secret_key and self.site_secret:
            return self
        if not self.is_sqlite:
            raise ConfigError("SECRET_KEY and SITE_SECRET must be set when not using SQLite")
        stored = _load_or_create_secrets(self.data_dir / "secrets.json")
        return dataclasses.replace(
            self,
            secret_key=self.secret_key or stored["secret_key"],
            site_secret=self.site_secret or stored["site_secret"],
        )


def _load_or_create_secrets(path: Path) -> dict[str, str]:
    if path.exists():
        return json.loads(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    generated = {"secret_key": secrets.token_urlsafe(48), "site_secret": secrets.token_urlsafe(48)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(generated, handle)
    return generated


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    return Settings.from_env(env).with_secrets()
