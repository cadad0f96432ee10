"""Credentials: argon2id passwords, user JWTs, widget site tokens, the service token.

Pure functions and small classes with no database access: the guards in `server/http/guards.py`
combine them with the store (user lookup, revocations, assistant versions).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from typing import Any

import jwt
from argon2 import PasswordHasher as _Argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from server.errors import AppError, ErrorCode

JWT_ALGORITHM = "HS256"
ACCESS = "access"
REFRESH = "refresh"
SITE = "site"

COMMON_PASSWORDS = frozenset(
    {
        "password", "password1", "password123", "12345678", "123456789", "1234567890",
        "qwerty123", "qwertyuiop", "1q2w3e4r", "1q2w3e4r5t", "abc12345", "abcd1234",
        "iloveyou1", "letmein1", "welcome1", "admin123", "passw0rd", "p@ssw0rd", "qwerty12",
        "trustno1", "football1", "baseball1", "monkey123", "dragon123", "sunshine1",
        "princess1", "changeme1", "zaq12wsx", "asdf1234", "qazwsx123",
    }
)


class PasswordHasher:
    """argon2id with tunable cost (tests turn it down; production keeps RFC 9106 defaults)."""

    def __init__(self, time_cost: int = 3, memory_kib: int = 65536, parallelism: int = 4):
        self._argon = _Argon2(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        # Verified against when the account does not exist, so both paths cost the same.
        self._dummy = self._argon.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self._argon.hash(password)

    def verify(self, hashed: str | None, password: str) -> bool:
        try:
            return self._argon.verify(hashed or self._dummy, password) and hashed is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, hashed: str) -> bool:
        return self._argon.check_needs_rehash(hashed)


def check_password_strength(password: str) -> None:
    """Register's rules, used by every path that sets a password."""
    problem = None
    if len(password) < 8:
        problem = "Password must be at least 8 characters long"
    elif len(password) > 128:
        problem = "Password must be at most 128 characters long"
    elif not any(c.isalpha() for c in password) or not any(c.isdigit() for c in password):
        problem = "Password must contain at least one letter and one digit"
    elif password.lower() in COMMON_PASSWORDS:
        problem = "Password is too common"
    if problem:
        raise AppError(ErrorCode.WEAK_PASSWORD, problem, status=400)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def keyed_hash(secret: str, *parts: str) -> str:
    """HMAC of short secrets (6-digit codes): useless to an attacker without the key."""
    message = "\x1f".join(parts).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def constant_time_equal(left: str | None, right: str | None) -> bool:
    if not left or not right:
        return False
    return hmac.compare_digest(left.encode(), right.encode())


def new_numeric_code(digits: int = 6) -> str:
    return f"{secrets.randbelow(10**digits):0{digits}d}"


def new_url_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


@dataclasses.dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    email: str
    type: str
    jti: str
    version: int
    expires_at: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    jti: str
    expires_at: dt.datetime


class TokenService:
    """User JWTs: `type` and `jti` on every token, `ver` = the user's token_version."""

    def __init__(self, secret: str, access_minutes: int, refresh_days: int) -> None:
        self._secret = secret
        self._access_ttl = dt.timedelta(minutes=access_minutes)
        self._refresh_ttl = dt.timedelta(days=refresh_days)

    def issue(self, user_id: int, email: str, version: int, token_type: str) -> IssuedToken:
        now = dt.datetime.now(dt.UTC)
        ttl = self._access_ttl if token_type == ACCESS else self._refresh_ttl
        expires = now + ttl
        jti = uuid.uuid4().hex
        payload = {
            "sub": str(user_id),
            "email": email,
            "type": token_type,
            "jti": jti,
            "ver": version,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
        }
        token = jwt.encode(payload, self._secret, algorithm=JWT_ALGORITHM)
        return IssuedToken(token=token, jti=jti, expires_at=expires)

    def decode(self, token: str, expected_type: str) -> TokenClaims:
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[JWT_ALGORITHM],
                options={"require": ["sub", "exp", "type", "jti"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AppError(ErrorCode.TOKEN_EXPIRED, "Token has expired") from exc
        except jwt.PyJWTError as exc:
            raise AppError(ErrorCode.UNAUTHORIZED, "Could not validate credentials") from exc
        if payload.get("type") != expected_type:
            raise AppError(ErrorCode.UNAUTHORIZED, "Could not validate credentials")
        try:
            user_id = int(payload["sub"])
            version = int(payload.get("ver", 0))
        except (TypeError, ValueError) as exc:
            raise AppError(ErrorCode.UNAUTHORIZED, "Could not validate credentials") from exc
        return TokenClaims(
            user_id=user_id,
            email=str(payload.get("email", "")),
            type=payload["type"],
            jti=str(payload["jti"]),
            version=version,
            expires_at=dt.datetime.fromtimestamp(payload["exp"], dt.UTC),
        )


# --- site tokens (spec §2.3) -------------------------------------------------------------


def normalise_domain(raw: str) -> str:
    value = raw.strip().lower()
    for prefix in ("https://", "http://"):
        if value.startswith(prefix):
            value = value[len(prefix) :]
    value = value.split("/", 1)[0].split(":", 1)[0]
    if value.startswith("www."):
        value = value[4:]
    return value.rstrip(".")


def normalise_domains(raw: str | list[str] | None) -> str:
    items = raw.split(",") if isinstance(raw, str) else list(raw or [])
    seen: list[str] = []
    for item in items:
        domain = normalise_domain(item)
        if domain and domain not in seen:
            seen.append(domain)
    return ",".join(seen)


def domain_allowed(domain: str, allowed_domains: str) -> bool:
    """`domain` equals an allowed domain or is its subdomain."""
    candidate = normalise_domain(domain)
    if not candidate:
        return False
    for allowed in filter(None, allowed_domains.split(",")):
        if candidate == allowed or candidate.endswith("." + allowed):
            return True
    return False


@dataclasses.dataclass(frozen=True, slots=True)
class SiteClaims:
    user_id: int
    assistant_id: int | None
    allowed_domains: str | None
    domains_hash: str | None
    widget_version: int | None


class SiteTokens:
    """Widget capabilities signed with SITE_SECRET; revoked by bumping `widget_version`."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def mint(
        self,
        user_id: int,
        assistant_id: int | None = None,
        allowed_domains: str | None = None,
        widget_version: int | None = None,
    ) -> str:
        payload: dict[str, Any] = {"type": SITE, "user_id": user_id}
        if assistant_id is not None:
            payload["assistant_id"] = assistant_id
        if allowed_domains is not None:
            payload["allowed_domains"] = allowed_domains
            payload["domains_hash"] = sha256_hex(allowed_domains)
        if widget_version is not None:
            payload["widget_version"] = widget_version
        payload["issued_at"] = int(dt.datetime.now(dt.UTC).timestamp())
        return jwt.encode(payload, self._secret, algorithm=JWT_ALGORITHM)

    def decode(self, token: str) -> SiteClaims:
        invalid = AppError(ErrorCode.INVALID_SITE_TOKEN, "Invalid site_token")
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[JWT_ALGORITHM],
                options={"verify_exp": False, "require": ["type", "user_id"]},
            )
        except jwt.PyJWTError as exc:
            raise invalid from exc
        if payload.get("type") != SITE:
            raise invalid
        try:
            user_id = int(payload["user_id"])
            assistant_id = payload.get("assistant_id")
            assistant_id = int(assistant_id) if assistant_id is not None else None
            version = payload.get("widget_version")
            version = int(version) if version is not None else None
        except (TypeError, ValueError) as exc:
            raise invalid from exc
        return SiteClaims(
            user_id=user_id,
            assistant_id=assistant_id,
            allowed_domains=payload.get("allowed_domains"),
            domains_hash=payload.get("domains_hash"),
            widget_version=version,
        )
