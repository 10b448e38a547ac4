"""`make dev` only: a "dev sign-in" for the demo, instead of pasting a token.

Wraps the App that the local host serves so that `/api/dev/token` answers: GET says the
route exists (the demo then shows its "dev sign-in" button), POST mints an access token
for the dev user (or `{"userId": "<uuid>"}`), signed with the development secret.

Only installed when `make dev` generated that secret itself: with a SUPABASE_JWT_SECRET of
a real project it would hand out real tokens, so then the route does not exist (404, as in
production, where this module is never loaded).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from devtools.token import DEV_USER, make_token
from sync.http import ApiError, Request, Response, error_response, json_response

PATH = "/api/dev/token"
LIFETIME = 24 * 3600  # a day: a demo session should not expire under the user's hands


class DevSignIn:
    """The App with one more route; everything else is the App's own (`__getattr__`)."""

    def __init__(self, app: Any, secret: str) -> None:
        self._app = app
        self._secret = secret

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app, name)

    async def handle(self, request: Request) -> Response:
        if request.path != PATH:
            return await self._app.handle(request)
        if request.method == "GET":
            return json_response(200, {"devSignIn": True, "user": DEV_USER})
        if request.method != "POST":
            return error_response(ApiError(405, "method_not_allowed", f"{PATH} takes GET or POST"))
        try:
            wanted = json.loads(request.body or b"{}").get("userId") or DEV_USER
            user = str(uuid.UUID(str(wanted)))
        except (ValueError, AttributeError):
            return error_response(ApiError(400, "bad_request", "userId must be a UUID"))
        token = make_token(self._secret, user, expires_in=LIFETIME)
        return json_response(200, {"token": token, "userId": user, "expiresIn": LIFETIME})


def install(secret: str) -> None:
    """Makes serve.run serve the App wrapped (it builds its App with serve.make_app)."""
    import serve

    build = serve.make_app

    def make_app(env: dict[str, str]) -> Any:
        return DevSignIn(build(env), secret)

    serve.make_app = make_app
