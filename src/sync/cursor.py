"""The opaque sync cursor: Postgres snapshots, never clocks.

A cursor says "the caller has every row whose writing transaction is visible in snapshot
`seen`". The next pull returns rows whose transaction is *not* visible there, so a
transaction that was still open during a pull (stamped earlier, committed later) is
delivered by a later pull. While a pull is cut into pages, the cursor also holds the
snapshot `upto` the pages are read against and the key of the last row sent; rows
committed between pages are not visible in `upto` and come in the next round.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

from sync import jsontext
from sync.http import ApiError
from sync.schema import IDENTIFIER, storable

# ASCII digits only (`\d` also takes Arabic-Indic and fullwidth digits), matched whole.
SNAPSHOT = re.compile(r"([0-9]{1,19}):([0-9]{1,19}):((?:[0-9]{1,19})(?:,[0-9]{1,19})*)?")
XID = re.compile(r"[1-9][0-9]{0,18}")
MAX_KEY = 1000  # characters of a key in a cursor (schema.MAX_KEY_LENGTH is less)
MAX_OWED = 20_000
MAX_XIP = 100_000
# Nothing is visible in this snapshot: a first sync takes everything.
NOTHING = "1:1:"


def check_snapshot(text: str) -> str:
    if not isinstance(text, str):
        raise ValueError("bad snapshot")
    match = SNAPSHOT.fullmatch(text)
    if not match:
        raise ValueError("bad snapshot")
    xmin, xmax = int(match[1]), int(match[2])
    xip = [int(x) for x in match[3].split(",")] if match[3] else []
    if not 1 <= xmin <= xmax < 2**63 or len(xip) > MAX_XIP:
        raise ValueError("bad snapshot bounds")
    # Postgres refuses a bound whose 32-bit transaction id part is 0 (invalid).
    if not (xmin & 0xFFFFFFFF and xmax & 0xFFFFFFFF):
        raise ValueError("bad snapshot bounds")
    if any(not xmin <= x < xmax for x in xip) or xip != sorted(set(xip)):
        raise ValueError("bad snapshot list")
    return text


def _slot(item: object) -> tuple[str, str]:
    """A (table, key) pair a real row could have: a table name the registry could hold,
    and a key Postgres can store as text."""
    if not isinstance(item, list | tuple) or len(item) != 2:
        raise ValueError("bad slot")
    table, key = item
    if not isinstance(table, str) or not IDENTIFIER.fullmatch(table):
        raise ValueError("bad slot")
    if not isinstance(key, str) or len(key) > MAX_KEY or not storable(key):
        raise ValueError("bad slot")
    return table, key


@dataclass(frozen=True)
class Cursor:
    seen: str = NOTHING
    upto: str | None = None  # set while paging
    # (xid, table, root, key) of the last row sent: `root` is the root key a moved-in row
    # was paged under, "" for any other row (see sync.sql.pull).
    after: tuple[str, str, str, str] | None = None
    # (table, key) of the caller's rows that an earlier answer owed: they did not fit its
    # byte budget. The next answer sends their current state first.
    owed: tuple[tuple[str, str], ...] = ()

    @property
    def initial(self) -> bool:
        return self.seen == NOTHING

    @property
    def xmin(self) -> str:
        return self.seen.split(":", 1)[0]

    def encode(self) -> str:
        payload: dict[str, object] = {"s": self.seen}
        if self.upto is not None:
            payload["u"] = self.upto
            payload["a"] = list(self.after or ())
        if self.owed:
            payload["o"] = [list(slot) for slot in self.owed]
        raw = json.dumps(payload, separators=(",", ":")).encode()
        return "c1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str | None) -> Cursor:
        if text is None:
            return cls()
        try:
            if not text.startswith("c1.") or len(text) > 2_000_000:
                raise ValueError("not a cursor")
            body = text[3:]
            data = jsontext.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)), 4)
            if not isinstance(data, dict):
                raise ValueError("not a cursor")
            seen = check_snapshot(data["s"])
            upto = data.get("u")
            after = None
            if upto is not None:
                check_snapshot(upto)
                after = tuple(data["a"])
                if len(after) == 3:  # a cursor issued before positions named a root
                    after = (after[0], after[1], "", after[2])
                if len(after) != 4 or not all(isinstance(p, str) for p in after):
                    raise ValueError("bad position")
                if not XID.fullmatch(after[0]):
                    raise ValueError("bad position")
                _slot(after[1:3])
                _slot((after[1], after[3]))
            owed = tuple(_slot(item) for item in data.get("o", ()))
            if len(owed) > MAX_OWED:
                raise ValueError("bad owed list")
            return cls(seen, upto, after, owed)  # type: ignore[arg-type]
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise ApiError(
                400,
                "bad_request",
                "lastSyncAt is not a cursor this server issued; send null for a full sync",
            ) from None
