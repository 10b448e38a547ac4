"""Configuration from environment variables (wrangler vars/secrets, or the process env)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SETTING_NAMES: tuple[str, ...] = (
    "SUPABASE_JWT_SECRET",
    "SUPABASE_URL",
    "JWT_AUDIENCE",
    "JWT_ISSUER",
    "JWT_LEEWAY",
    "JWKS_MAX_AGE",
    "ALLOWED_ORIGINS",
    "MAX_BODY_BYTES",
    "MAX_CHANGES",
    "PULL_PAGE_SIZE",
    "MAX_CLOCK_SKEW",
    "CLOCK_SKEW_POLICY",
    "MAX_ATTEMPTS",
    "MAX_ANSWER_BYTES",
    "MAX_ROW_BYTES",
    "STATEMENT_TIMEOUT_MS",
    "LOCK_TIMEOUT_MS",
    "REQUEST_TIMEOUT_MS",
    "MAX_INFLIGHT_PER_USER",
    "MAX_INFLIGHT",
)


class SettingsError(ValueError):
    """A setting has a value the server cannot run with; raised at start-up, not per request."""


@dataclass(frozen=True)
class Settings:
    jwt_secret: str | None = None
    supabase_url: str | None = None
    jwt_audience: str = "authenticated"
    jwt_issuer: str | None = None
    jwt_leeway: int = 30
    jwks_max_age: int = 600
    allowed_origins: tuple[str, ...] = ()
    max_body_bytes: int = 8 * 1024 * 1024
    max_changes: int = 10_000
    pull_page_size: int = 1000
    max_clock_skew: int = 300
    clock_skew_policy: str = "clamp"
    max_attempts: int = 3
    # An answer's size: rows, converge rows and the pull page together (a page always
    # holds at least one row). Well inside a Worker isolate's 128 MB.
    max_answer_bytes: int = 4 * 1024 * 1024
    max_row_bytes: int = 1024 * 1024  # a pushed row's values; large files go elsewhere
    statement_timeout_ms: int = 10_000
    lock_timeout_ms: int = 2_000
    request_timeout_ms: int = 25_000  # Hyperdrive cuts queries at 60 s
    max_inflight_per_user: int = 4  # concurrent syncs of one user in one process/isolate
    max_inflight: int = 64  # concurrent syncs in one process/isolate

    @property
    def jwks_url(self) -> str | None:
        if not self.supabase_url:
            return None
        return self.supabase_url.rstrip("/") + "/auth/v1/.well-known/jwks.json"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        def text(name: str) -> str | None:
            value = env.get(name)
            if value is None:
                return None
            value = str(value).strip()
            return value or None

        def integer(name: str, default: int, minimum: int) -> int:
            value = text(name)
            if value is None:
                return default
            if not value.isascii() or not value.lstrip("-").isdigit():
                raise SettingsError(f"{name} must be an integer, got {value!r}")
            number = int(value)
            if number < minimum:
                raise SettingsError(f"{name} must be at least {minimum}, got {number}")
            return number

        secret = text("SUPABASE_JWT_SECRET")
        url = text("SUPABASE_URL")
        if url and not url.startswith(("https://", "http://")):
            raise SettingsError(f"SUPABASE_URL must be an http(s) URL, got {url!r}")
        if not secret and not url:
            raise SettingsError(
                "no way to verify tokens: set SUPABASE_JWT_SECRET (HS256) and/or "
                "SUPABASE_URL (ES256/RS256 keys from the project's JWKS)"
            )
        if secret and len(secret) < 32:
            raise SettingsError("SUPABASE_JWT_SECRET is shorter than 32 characters")
        policy = (text("CLOCK_SKEW_POLICY") or "clamp").lower()
        if policy not in ("clamp", "reject"):
            raise SettingsError(f"CLOCK_SKEW_POLICY must be clamp or reject, got {policy!r}")
        origins = tuple(
            o.strip().rstrip("/") for o in (text("ALLOWED_ORIGINS") or "").split(",") if o.strip()
        )
        issuer = text("JWT_ISSUER") or (url.rstrip("/") + "/auth/v1" if url else None)
        return cls(
            jwt_secret=secret,
            supabase_url=url,
            jwt_audience=text("JWT_AUDIENCE") or "authenticated",
            jwt_issuer=issuer,
            jwt_leeway=integer("JWT_LEEWAY", 30, 0),
            jwks_max_age=integer("JWKS_MAX_AGE", 600, 1),
            allowed_origins=origins,
            max_body_bytes=integer("MAX_BODY_BYTES", cls.max_body_bytes, 1024),
            max_changes=integer("MAX_CHANGES", cls.max_changes, 1),
            pull_page_size=integer("PULL_PAGE_SIZE", cls.pull_page_size, 1),
            max_clock_skew=integer("MAX_CLOCK_SKEW", cls.max_clock_skew, 0),
            clock_skew_policy=policy,
            max_attempts=integer("MAX_ATTEMPTS", cls.max_attempts, 1),
            max_answer_bytes=integer("MAX_ANSWER_BYTES", cls.max_answer_bytes, 65_536),
            max_row_bytes=integer("MAX_ROW_BYTES", cls.max_row_bytes, 1024),
            statement_timeout_ms=integer("STATEMENT_TIMEOUT_MS", cls.statement_timeout_ms, 100),
            lock_timeout_ms=integer("LOCK_TIMEOUT_MS", cls.lock_timeout_ms, 10),
            request_timeout_ms=integer("REQUEST_TIMEOUT_MS", cls.request_timeout_ms, 500),
            max_inflight_per_user=integer("MAX_INFLIGHT_PER_USER", cls.max_inflight_per_user, 1),
            max_inflight=integer("MAX_INFLIGHT", cls.max_inflight, 1),
        )
