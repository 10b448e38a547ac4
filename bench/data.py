"""The rows the bench writes: todos of the example schema, deterministic per seed."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

TITLES = ("buy milk", "call the plumber", "book flights to Lisbon", "renew passport", "fix bike")
TAGS = (None, ["home"], ["work", "urgent"], ["errand", "weekend", "shopping"])


class Rows:
    """Todo rows in the server's format; ids from a seeded generator, clocks an hour ago
    (inside any clock-skew window), one microsecond apart."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.base = datetime.now(UTC) - timedelta(hours=1)
        self.count = 0

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def todos(self, n: int, project_id: str | None = None) -> list[dict[str, Any]]:
        rows = []
        for _ in range(n):
            i = self.count
            self.count += 1
            clock = self.base + timedelta(microseconds=i)
            rows.append(
                {
                    "id": self.uuid(),
                    "project_id": project_id,
                    "title": f"{TITLES[i % len(TITLES)]} #{i}",
                    "done": i % 3 == 0,
                    "due_at": None if i % 2 else iso(clock + timedelta(days=3)),
                    "position": float(i),
                    "tags": TAGS[i % len(TAGS)],
                    "updated_at": iso(clock),
                }
            )
        return rows


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def changes(rows: list[dict[str, Any]], first_id: int = 1, op: str = "insert") -> list[dict]:
    """Outbox entries as a client sends them (the owner column left out)."""
    return [
        {"id": first_id + i, "table": "todos", "op": op, "row": row} for i, row in enumerate(rows)
    ]
