"""Verifies Supabase access tokens locally: HS256 with the project secret, ES256/RS256 with
keys from the project's JWKS (cached, refetched on an unknown key id, at most so often).
Signatures are checked natively (sync.signatures: WebCrypto on Workers, `cryptography` under
CPython); the token's compact form is taken apart here, its header and payload parsed with
their nesting bounded first.

Verified tokens are remembered until they expire, so a device syncing every few seconds
costs one signature check per token, not one per request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sync import jsontext, keys, signatures
from sync.http import ApiError
from sync.schema import UUID
from sync.settings import Settings

FetchJson = Callable[[str], Awaitable[Any]]
TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
MAX_TOKEN = 16_384
MAX_TOKEN_DEPTH = 32  # user_metadata is the app's; deeper is no Supabase token
REFETCH_FLOOR = 30.0  # seconds between JWKS fetches caused by unknown key ids
JWKS_TIMEOUT = 5.0  # seconds one JWKS fetch may take; waiters share it
MAX_JWKS_KEYS = 64
# Remembered tokens are keyed by their SHA-256, so an entry costs ~200 bytes whatever the
# token's size: 10 000 of them stay around 2 MB.
REMEMBERED = 10_000


def unauthorized(message: str) -> ApiError:
    return ApiError(
        401, "unauthorized", message, {"www-authenticate": 'Bearer error="invalid_token"'}
    )


class Authenticator:
    def __init__(
        self,
        settings: Settings,
        fetch_json: FetchJson | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.fetch_json = fetch_json
        self.clock = clock
        self.jwks: dict[str, keys.PublicKey] = {}
        self.jwks_fetched_at: float | None = None
        self.jwks_tried_at = -1e18
        self.remembered: dict[bytes, tuple[str, float]] = {}
        self.refreshing_since: float | None = None  # a JWKS fetch is under way

    async def user_id(self, authorization: str | None) -> str:
        """The caller's user id (the token's `sub`), or a 401."""
        if not authorization:
            raise unauthorized("missing Authorization: Bearer <access token>")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("Authorization must be 'Bearer <access token>'")
        if len(token) > MAX_TOKEN or not TOKEN.fullmatch(token):
            raise unauthorized("the access token is not a JWT")
        now = self.clock()
        digest = hashlib.sha256(token.encode("ascii")).digest()
        hit = self.remembered.get(digest)
        if hit is not None and now <= hit[1] + self.settings.jwt_leeway:
            return hit[0]
        claims = await self._verify(token)
        user, expires = self._check_claims(claims, now)
        self.remembered[digest] = (user, expires)
        # Oldest first out. The local host calls this from several threads: a key another
        # thread already evicted is fine to miss.
        while len(self.remembered) > REMEMBERED:
            with contextlib.suppress(KeyError, StopIteration, RuntimeError):
                del self.remembered[next(iter(self.remembered))]
        return user

    async def _verify(self, token: str) -> dict[str, Any]:
        """The claims of a token whose signature verifies (JWS compact serialisation)."""
        header_part, payload_part, signature_part = token.split(".")
        parts = []
        for part in (header_part, payload_part, signature_part):
            try:
                parts.append(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
            except (binascii.Error, ValueError):
                raise unauthorized("the access token is not a JWT") from None
        header_raw, payload_raw, signature = parts
        # Both are parsed with json.loads: their nesting is bounded first (a deep document
        # overflows Pyodide's stack, which kills the isolate).
        for raw in (header_raw, payload_raw):
            if not jsontext.depth_within(raw, MAX_TOKEN_DEPTH):
                raise unauthorized("the access token is nested too deeply")
        try:
            header = jsontext.loads(header_raw, MAX_TOKEN_DEPTH)
        except ValueError:
            header = None
        # No JWS extension is understood here: one marked critical, or an unencoded payload
        # (RFC 7797), makes the token one we cannot read as its signer meant.
        if (
            not isinstance(header, dict)
            or "crit" in header
            or header.get("b64", True) is not True
            or not isinstance(header.get("kid", ""), str)
        ):
            raise unauthorized("the access token's header is unreadable")
        alg = header.get("alg")
        signing_input = f"{header_part}.{payload_part}".encode("ascii")
        if alg == "HS256" and self.settings.jwt_secret:
            secret = self.settings.jwt_secret.encode("utf-8")
            valid = signatures.verify_hs256(secret, signing_input, signature)
        elif alg in ("ES256", "RS256") and self.settings.jwks_url:
            key = await self._jwks_key(header.get("kid"), alg)
            valid = await signatures.verify(key, signing_input, signature)
        else:
            raise unauthorized(f"tokens signed with {alg!r} are not accepted here")
        try:
            if not valid:
                raise ValueError("bad signature")
            claims = jsontext.loads(payload_raw, MAX_TOKEN_DEPTH)
        except ValueError:
            raise unauthorized("the access token's signature does not verify") from None
        if not isinstance(claims, dict):
            raise unauthorized("the access token's payload is not an object")
        return claims

    def _check_claims(self, claims: dict[str, Any], now: float) -> tuple[str, float]:
        leeway = self.settings.jwt_leeway

        def number(name: str) -> float | None:
            value = claims.get(name)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise unauthorized(f"the token's {name} claim is not a number")
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):  # 1e400 parses as inf; 10**400 overflows
                raise unauthorized(f"the token's {name} claim is not a finite time")
            return number

        expires = number("exp")
        if expires is None:
            raise unauthorized("the access token has no expiry")
        if now > expires + leeway:
            raise unauthorized("the access token has expired")
        not_before = number("nbf")
        if not_before is not None and now < not_before - leeway:
            raise unauthorized("the access token is not valid yet")
        issued = number("iat")
        if issued is not None and issued > now + leeway:
            raise unauthorized("the access token was issued in the future")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.settings.jwt_audience not in audiences:
            raise unauthorized("the access token is for another audience")
        if self.settings.jwt_issuer and claims.get("iss") != self.settings.jwt_issuer:
            raise unauthorized("the access token comes from another issuer")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not UUID.fullmatch(sub):
            raise unauthorized("the access token names no user (sub must be a user id)")
        return sub.lower(), expires

    async def _jwks_key(self, kid: Any, alg: str) -> keys.PublicKey:
        now = self.clock()
        stale = (
            self.jwks_fetched_at is None or now - self.jwks_fetched_at > self.settings.jwks_max_age
        )
        if stale or (self._find(kid, alg) is None and now - self.jwks_tried_at > REFETCH_FLOOR):
            await self._refresh(now)
        key = self._find(kid, alg)
        if key is None:
            raise unauthorized("the access token was signed by an unknown key")
        return key

    def _find(self, kid: Any, alg: str) -> keys.PublicKey | None:
        if isinstance(kid, str):
            key = self.jwks.get(kid)
            return key if key is not None and key.alg == alg else None
        fitting = [k for k in self.jwks.values() if k.alg == alg]
        return fitting[0] if len(fitting) == 1 else None

    async def _refresh(self, now: float) -> None:
        """Fetches the JWKS, at most JWKS_TIMEOUT long. Requests that need it meanwhile
        wait for that one fetch instead of starting their own (polling, because the local
        host runs each request in its own event loop)."""
        if self.refreshing_since is not None and now - self.refreshing_since < JWKS_TIMEOUT:
            for _ in range(int(JWKS_TIMEOUT / 0.02) + 1):
                await asyncio.sleep(0.02)
                if self.refreshing_since is None:
                    break
            if not self.jwks:
                raise ApiError(503, "unavailable", "could not fetch the signing keys")
            return
        self.refreshing_since = now
        try:
            await self._fetch_keys(now)
        finally:
            self.refreshing_since = None

    async def _fetch_keys(self, now: float) -> None:
        self.jwks_tried_at = now
        url = self.settings.jwks_url
        if self.fetch_json is None or url is None:
            raise ApiError(503, "unavailable", "this host cannot fetch the signing keys")
        try:
            document = await asyncio.wait_for(self.fetch_json(url), JWKS_TIMEOUT)
            if isinstance(document, str | bytes):
                document = jsontext.loads(document, 8)
            listed = document.get("keys") if isinstance(document, dict) else None
            if not isinstance(listed, list):
                raise ValueError("the JWKS document has no list of keys")
        except Exception:  # unreachable, slow, or not a JWKS: the same to the caller
            if self.jwks:
                return  # keep serving with the keys we have; try again after the floor
            raise ApiError(503, "unavailable", "could not fetch the signing keys") from None
        found: dict[str, keys.PublicKey] = {}
        for index, jwk in enumerate(listed[:MAX_JWKS_KEYS]):
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                found[str(jwk.get("kid", f"#{index}"))] = keys.public_key_from_jwk(jwk)
            except ValueError:
                continue  # a key we cannot use (another curve, too short) is ignored
        self.jwks = found
        self.jwks_fetched_at = now
