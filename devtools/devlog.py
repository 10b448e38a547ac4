"""`make dev`'s terminal log: one readable line per request instead of the JSON record.

    20:14:03  POST /api/sync 200  71 ms  user 00000000  changes 1 ok 1 refused 0 pulled 1
              [auth 1 · connect 12 · push 12 · pull 24 · commit 1]

The JSON line stays the default everywhere else (production logs are read by machines);
`LOG_FORMAT=json make dev` keeps it here too. Every field of the record that is not shown
in its own words is appended as key=value, so nothing the server logs is hidden.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

SHOWN = {
    "msg",
    "request_id",
    "method",
    "path",
    "status",
    "ms",
    "phases",
    "user_id",
    "changes",
    "accepted",
    "rejected",
    "pulled",
    "has_more",
}


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}:{_value(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.1f}"
    return value if isinstance(value, str) else json.dumps(value, default=str)


def pretty(record: dict[str, Any]) -> str:
    """One terminal line for a log record (see the module docstring)."""
    at = time.strftime("%H:%M:%S")
    if record.get("msg") != "request":
        rest = " ".join(f"{k}={_value(v)}" for k, v in record.items() if k != "msg")
        return f"{at}  {record.get('msg', '?')} {rest}".rstrip()
    parts = [
        f"{at}  {record.get('method', '')} {record.get('path', '')} {record.get('status', '')}",
        f"{round(record.get('ms', 0))} ms",
    ]
    if record.get("user_id"):
        parts.append(f"user {str(record['user_id'])[:8]}")
    if "changes" in record:
        counts = (
            f"changes {record['changes']} ok {record.get('accepted', 0)} "
            f"refused {record.get('rejected', 0)} pulled {record.get('pulled', 0)}"
        )
        parts.append(counts + (" (more to pull)" if record.get("has_more") else ""))
    extra = " ".join(f"{k}={_value(v)}" for k, v in record.items() if k not in SHOWN)
    if extra:
        parts.append(extra)
    phases = record.get("phases") or {}
    if phases:
        parts.append("[" + " · ".join(f"{k} {round(v)}" for k, v in phases.items()) + "]")
    return "  ".join(parts)


def pretty_log(record: dict[str, Any]) -> None:
    print(pretty(record), file=sys.stdout, flush=True)


def install() -> None:
    """Makes serve.run's App log readable lines (it builds its App with serve.make_app)."""
    import serve

    build = serve.make_app

    def make_app(env: dict[str, str]) -> Any:
        app = build(env)
        app.log = pretty_log
        return app

    serve.make_app = make_app
