"""JSON from untrusted text, with its nesting bounded before any recursive parse.

`json.loads` recurses once per nesting level. Under CPython a deep document raises
`RecursionError`; under Pyodide (the Workers runtime) the wasm stack overflows first, a
fatal error that aborts the isolate and every request it serves. So the depth is measured
without recursion, with C-speed byte operations only: escapes are dropped, everything but
brackets and quotes is dropped, the quoted parts are cut out, and innermost bracket pairs
are removed once per round. A round removes at least one level, so a document of depth
d <= `max_depth` always passes, and whatever the size, the work stops after `max_depth`
rounds (a round may remove two levels of alternating brackets: the bound is 2x).
"""

from __future__ import annotations

import json
from typing import Any

# Deep enough for any real request (envelope + jsonb values of MAX_JSON_DEPTH).
MAX_DEPTH = 96

_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')


class JsonTextError(ValueError):
    """The text is not JSON we parse: malformed, nested too deeply, NaN/Infinity."""


def depth_within(data: bytes, max_depth: int = MAX_DEPTH) -> bool:
    """True when every bracket in `data` (outside strings) is matched and the nesting
    is at most `max_depth`. Unbalanced brackets count as too deep: the recursive parser
    would descend through them before noticing."""
    # Backslashes occur only inside strings: `\\` and `\"` go first, so every quote
    # left opens or closes a string, and the parts between odd and even quotes are text.
    # (Most bodies hold no backslash at all: one scan then spares two copies of the body.)
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in data else data
    quoted = unescaped.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    skeleton = b"".join(quoted.split(b'"')[::2]) if b'"' in quoted else quoted
    opening = len(skeleton) - len(skeleton.lstrip(b"[{"))
    if opening > 2 * max_depth:
        return False  # the common attack, told at once: a long run of openers
    for _ in range(max_depth):
        if not skeleton:
            return True
        reduced = skeleton.replace(b"[]", b"").replace(b"{}", b"")
        if len(reduced) == len(skeleton):
            return False  # unbalanced: no innermost pair left to remove
        skeleton = reduced
    return not skeleton


def _no_constant(name: str) -> Any:
    raise JsonTextError(f"{name} is not JSON")


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Parses strict JSON (no NaN/Infinity), refusing documents nested over `max_depth`.
    Every failure is a JsonTextError; callers turn it into their own 4xx."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if not depth_within(raw, max_depth):
        raise JsonTextError(f"nested more than {max_depth} levels deep, or unbalanced")
    try:
        text = raw.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise JsonTextError("not UTF-8") from None
    except RecursionError:  # not reachable after the depth check; kept as a guard
        raise JsonTextError("nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, and over-long integers
        raise JsonTextError(str(error)) from None
