"""Rate limits the way the reference PDS counts them.

Checked against bluesky-social/atproto:
- packages/pds/src/rate-limits.ts: "global-ip" 3,000 points per 5 minutes keyed by client
  address for every XRPC call; shared "repo-write-hour" 5,000 and "repo-write-day" 35,000
  points keyed by the account's DID (create 3, update 2, delete 1);
- packages/pds/src/api/com/atproto/server/createSession.ts: 30 per 5 minutes and 300 per
  day, keyed by "<identifier>-<client address>";
- packages/xrpc-server/src/rate-limiter.ts (rate-limiter-flexible's memory limiter): a fixed
  window per key that opens at the first point spent; a refused request still spends its
  points; several limiters on one route all spend, the answer carries the tightest (fewest
  points remaining), and a refusal carries the refusing limiter's numbers;
- packages/xrpc-server/src/rate-limiter-http.ts: headers RateLimit-Limit, -Remaining,
  -Reset (epoch seconds, floored), -Policy "<limit>;w=<window seconds>", and Retry-After on
  a 429 "RateLimitExceeded".
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Status:
    name: str
    limit: int
    window_s: float
    remaining: int
    reset_at: float
    ok: bool
    spent: int = 0  # points spent in the window so far, refused ones included

    def headers(self, now):
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.floor(self.reset_at)),
            "RateLimit-Policy": f"{self.limit};w={int(self.window_s)}",
        }
        if not self.ok:
            headers["Retry-After"] = str(max(0, math.ceil(self.reset_at - now)))
        return headers


class FixedWindows:
    """Points spent per key in fixed windows. Not thread-safe: the fake's lock guards it."""

    def __init__(self):
        self._windows = {}  # (limiter name, key) -> [points spent, window ends at]

    def clear(self):
        self._windows.clear()

    def spend(self, name, key, points, limit, window_s, now):
        window = self._windows.get((name, key))
        if window is None or window[1] <= now:
            window = self._windows[(name, key)] = [0, now + window_s]
        window[0] += points
        return Status(
            name=name,
            limit=limit,
            window_s=window_s,
            remaining=max(0, limit - window[0]),
            reset_at=window[1],
            ok=window[0] <= limit,
            spent=window[0],
        )


def combine(statuses):
    """One answer for several limiters: the first refusal, else the tightest."""
    for status in statuses:
        if not status.ok:
            return status
    return min(statuses, key=lambda status: status.remaining)
