"""`make token`: prints an access token shaped like the ones Supabase Auth issues.

    python -m devtools.token [--user-id UUID] [--expires-in SECONDS]

Signed HS256 with SUPABASE_JWT_SECRET, or with the development secret `make dev` keeps.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

import jwt

from devtools.dev import data_dir, dev_secret

DEV_USER = "00000000-0000-4000-8000-000000000001"


def make_token(secret: str, user_id: str, expires_in: int = 3600, issuer: str | None = None) -> str:
    now = int(time.time())
    claims = {
        "sub": user_id,
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + expires_in,
        "session_id": str(uuid.uuid4()),
        "aal": "aal1",
        "is_anonymous": False,
        "email": f"{user_id[:8]}@example.test",
    }
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user-id", default=os.environ.get("USER_ID") or DEV_USER)
    parser.add_argument("--expires-in", type=int, default=int(os.environ.get("EXPIRES_IN") or 3600))
    args = parser.parse_args()
    try:
        user = str(uuid.UUID(args.user_id))
    except ValueError:
        print(f"--user-id must be a UUID, got {args.user_id!r}", file=sys.stderr)
        return 2
    url = os.environ.get("SUPABASE_URL")
    issuer = os.environ.get("JWT_ISSUER") or (url.rstrip("/") + "/auth/v1" if url else None)
    print(make_token(dev_secret(data_dir()), user, args.expires_in, issuer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
