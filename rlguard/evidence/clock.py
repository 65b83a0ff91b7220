"""RFC 3339 UTC timestamps with microseconds, cheap enough for the record hot path."""

from __future__ import annotations

import time


class UtcClock:
    """Formats ``time.time_ns()`` as ``2026-04-01T12:00:00.123456Z``, caching the seconds part.

    Not thread-safe on its own: the recorder calls it under its lock.
    """

    __slots__ = ("prefix", "sec")

    def __init__(self) -> None:
        self.sec = -1
        self.prefix = b""

    def tick(self, sec: int) -> bytes:
        """Move to second `sec` (since the epoch); returns the new ``YYYY-MM-DDTHH:MM:SS.`` prefix."""
        self.sec = sec
        self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec)).encode()
        return self.prefix

    def now(self) -> tuple[bytes, int]:
        """The current time as RFC 3339 bytes, and as nanoseconds since the epoch."""
        ns = time.time_ns()
        us = ns // 1000
        sec = us // 1_000_000
        prefix = self.prefix if sec == self.sec else self.tick(sec)
        return prefix + b"%06dZ" % (us - sec * 1_000_000), ns


def utc_now() -> str:
    """The current time as an RFC 3339 UTC string with microseconds."""
    return UtcClock().now()[0].decode()
