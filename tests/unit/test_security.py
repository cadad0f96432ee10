"""Credentials as pure functions: password rules, argon2, user JWTs, keyed hashes, site tokens."""

from __future__ import annotations

import jwt
import pytest

from server.errors import AppError, ErrorCode
from server.security import (
    ACCESS,
    JWT_ALGORITHM,
    REFRESH,
    PasswordHasher,
    SiteTokens,
    TokenService,
    check_password_strength,
    constant_time_equal,
    keyed_hash,
    new_numeric_code,
    new_url_token,
    sha256_hex,
)

SECRET = "unit-secret-" + "k" * 32
SITE_SECRET = "unit-site-secret-" + "s" * 32


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_kib=1024, parallelism=1)


@pytest.fixture
def tokens() -> TokenService:
    return TokenService(SECRET, access_minutes=60, refresh_days=30)


# --- password rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["Sturdy-pass-42", "abcdefg1", "1234567a", "Ünïcödé-9x", "a1" * 64],
)
def test_password_meeting_the_rules_is_accepted(password: str) -> None:
    check_password_strength(password)


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("abc1", "at least 8"),
        ("a1" * 64 + "x", "at most 128"),
        ("onlyletters", "letter and one digit"),
        ("1234567890123", "letter and one digit"),
        ("Password1", "too common"),
        ("QWERTY123", "too common"),
    ],
)
def test_password_breaking_a_rule_is_weak(password: str, reason: str) -> None:
    with pytest.raises(AppError) as caught:
        check_password_strength(password)
    assert caught.value.code is ErrorCode.WEAK_PASSWORD
    assert caught.value.status == 400
    assert reason in caught.value.detail


# --- argon2 ------------------------------------------------------------------------------------


def test_hash_verifies_only_its_password(hasher: PasswordHasher) -> None:
    hashed = hasher.hash("Sturdy-pass-42")
    assert hashed.startswith("$argon2id$")
    assert hasher.verify(hashed, "Sturdy-pass-42")
    assert not hasher.verify(hashed, "Sturdy-pass-43")


def test_verify_without_a_hash_is_false(hasher: PasswordHasher) -> None:
    assert not hasher.verify(None, "anything-1")


def test_verify_of_a_corrupt_hash_is_false(hasher: PasswordHasher) -> None:
    assert not hasher.verify("not-a-hash", "anything-1")


def test_hash_with_other_parameters_needs_rehash(hasher: PasswordHasher) -> None:
    stronger = PasswordHasher(time_cost=2, memory_kib=2048, parallelism=1)
    assert hasher.needs_rehash(stronger.hash("Sturdy-pass-42"))
    assert not hasher.needs_rehash(hasher.hash("Sturdy-pass-42"))


# --- user JWTs -----------------------------------------------------------------------------------


def test_issued_token_decodes_with_its_claims(tokens: TokenService) -> None:
    issued = tokens.issue(7, "a@example.com", 3, ACCESS)
    claims = tokens.decode(issued.token, ACCESS)
    assert (claims.user_id, claims.email, claims.type, claims.version) == (
        7, "a@example.com", ACCESS, 3,
    )
    assert claims.jti == issued.jti
    assert int(claims.expires_at.timestamp()) == int(issued.expires_at.timestamp())


def test_every_token_gets_its_own_jti(tokens: TokenService) -> None:
    first = tokens.issue(7, "a@example.com", 0, ACCESS)
    second = tokens.issue(7, "a@example.com", 0, ACCESS)
    assert first.jti != second.jti


def test_refresh_token_is_not_an_access_token(tokens: TokenService) -> None:
    refresh = tokens.issue(7, "a@example.com", 0, REFRESH).token
    with pytest.raises(AppError) as caught:
        tokens.decode(refresh, ACCESS)
    assert caught.value.code is ErrorCode.UNAUTHORIZED


def test_access_token_is_not_a_refresh_token(tokens: TokenService) -> None:
    access = tokens.issue(7, "a@example.com", 0, ACCESS).token
    with pytest.raises(AppError):
        tokens.decode(access, REFRESH)


def test_refresh_token_lives_longer_than_access_token(tokens: TokenService) -> None:
    access = tokens.issue(7, "a@example.com", 0, ACCESS)
    refresh = tokens.issue(7, "a@example.com", 0, REFRESH)
    assert (refresh.expires_at - access.expires_at).days >= 29


def test_expired_token_is_refused_as_expired() -> None:
    expired_issuer = TokenService(SECRET, access_minutes=-5, refresh_days=30)
    token = expired_issuer.issue(7, "a@example.com", 0, ACCESS).token
    with pytest.raises(AppError) as caught:
        TokenService(SECRET, 60, 30).decode(token, ACCESS)
    assert caught.value.code is ErrorCode.TOKEN_EXPIRED
    assert caught.value.status == 401


def test_token_signed_with_another_secret_is_refused(tokens: TokenService) -> None:
    foreign = TokenService("another-secret-" + "z" * 32, 60, 30).issue(7, "a@x.io", 0, ACCESS)
    with pytest.raises(AppError) as caught:
        tokens.decode(foreign.token, ACCESS)
    assert caught.value.code is ErrorCode.UNAUTHORIZED


def test_token_without_jti_is_refused(tokens: TokenService) -> None:
    payload = {"sub": "7", "email": "a@example.com", "type": ACCESS, "exp": 4_000_000_000}
    token = jwt.encode(payload, SECRET, algorithm=JWT_ALGORITHM)
    with pytest.raises(AppError):
        tokens.decode(token, ACCESS)


def test_token_with_a_non_numeric_subject_is_refused(tokens: TokenService) -> None:
    payload = {"sub": "seven", "type": ACCESS, "jti": "x", "exp": 4_000_000_000}
    token = jwt.encode(payload, SECRET, algorithm=JWT_ALGORITHM)
    with pytest.raises(AppError):
        tokens.decode(token, ACCESS)


def test_unsigned_token_is_refused(tokens: TokenService) -> None:
    payload = {"sub": "7", "type": ACCESS, "jti": "x", "exp": 4_000_000_000}
    token = jwt.encode(payload, None, algorithm="none")
    with pytest.raises(AppError):
        tokens.decode(token, ACCESS)


# --- keyed hashes, codes, comparisons ------------------------------------------------------------


def test_keyed_hash_depends_on_key_email_and_code() -> None:
    base = keyed_hash(SECRET, "a@example.com", "123456")
    assert base == keyed_hash(SECRET, "a@example.com", "123456")
    assert base != keyed_hash("other-key", "a@example.com", "123456")
    assert base != keyed_hash(SECRET, "b@example.com", "123456")
    assert base != keyed_hash(SECRET, "a@example.com", "123457")
    assert "123456" not in base


def test_keyed_hash_parts_do_not_run_together() -> None:
    assert keyed_hash(SECRET, "ab", "c") != keyed_hash(SECRET, "a", "bc")


def test_keyed_hash_is_not_a_plain_sha256() -> None:
    assert keyed_hash(SECRET, "123456") != sha256_hex("123456")


def test_numeric_code_has_six_digits() -> None:
    for _ in range(200):
        code = new_numeric_code()
        assert len(code) == 6 and code.isdigit()


def test_url_token_is_url_safe_and_long() -> None:
    token = new_url_token(32)
    assert len(token) >= 43
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [("abc", "abc", True), ("abc", "abd", False), (None, "abc", False), ("", "", False),
     (None, None, False)],
)
def test_constant_time_equal(left: str | None, right: str | None, equal: bool) -> None:
    assert constant_time_equal(left, right) is equal


# --- site tokens ---------------------------------------------------------------------------------


def test_site_token_round_trip_carries_binding() -> None:
    sites = SiteTokens(SITE_SECRET)
    token = sites.mint(5, assistant_id=9, allowed_domains="shop.example.com", widget_version=2)
    claims = sites.decode(token)
    assert (claims.user_id, claims.assistant_id, claims.widget_version) == (5, 9, 2)
    assert claims.allowed_domains == "shop.example.com"
    assert claims.domains_hash == sha256_hex("shop.example.com")


def test_minimal_site_token_has_only_the_owner() -> None:
    sites = SiteTokens(SITE_SECRET)
    claims = sites.decode(sites.mint(5))
    assert (claims.user_id, claims.assistant_id, claims.allowed_domains) == (5, None, None)


def test_site_token_with_another_secret_is_invalid() -> None:
    token = SiteTokens("other-" + "q" * 32).mint(5)
    with pytest.raises(AppError) as caught:
        SiteTokens(SITE_SECRET).decode(token)
    assert caught.value.code is ErrorCode.INVALID_SITE_TOKEN
    assert caught.value.status == 401


def test_user_jwt_is_not_a_site_token() -> None:
    user_token = jwt.encode(
        {"type": ACCESS, "user_id": 5, "sub": "5"}, SITE_SECRET, algorithm=JWT_ALGORITHM
    )
    with pytest.raises(AppError) as caught:
        SiteTokens(SITE_SECRET).decode(user_token)
    assert caught.value.code is ErrorCode.INVALID_SITE_TOKEN


def test_site_token_with_a_bad_owner_is_invalid() -> None:
    token = jwt.encode({"type": "site", "user_id": "five"}, SITE_SECRET, algorithm=JWT_ALGORITHM)
    with pytest.raises(AppError):
        SiteTokens(SITE_SECRET).decode(token)


def test_garbage_site_token_is_invalid() -> None:
    with pytest.raises(AppError):
        SiteTokens(SITE_SECRET).decode("not.a.token")
