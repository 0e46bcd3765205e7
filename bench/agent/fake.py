"""Everything the benchmark knows about the fake Bluesky, in one module: its test hooks
(/_fake/...) on the host's loopback, and how it names synthetic accounts.

The fake is on the host's loopback, or where BENCH_FAKE_HOST says (the cluster bench: the
fake network's own host). It works with the fake as it is and with the stricter one of the
fake-network issue: a setting, hook or total the running fake does not have is reported as
missing (None or False), never faked here, and the report says so.
"""

import http.client
import json
import os

DEFAULT_HOST = os.environ.get("BENCH_FAKE_HOST", "127.0.0.1")
DEFAULT_PORT = 8787
# The per-account write windows a benchmark may compress (Bluesky's: an hour and a day).
WRITE_WINDOWS = {"hour_window_s": 3600.0, "day_window_s": 86400.0}
# What lifts every limit: the stricter fake has one switch, the older one only budgets.
_LIFTED = {"write_points_per_hour": 10**9, "write_points_per_day": 10**9}


def target_handle(name, followers):
    """A synthetic account with `followers` followers (computed by the fake, not stored)."""
    return f"{name}-{followers}.fake.test"


class FakeError(RuntimeError):
    pass


class Fake:
    def __init__(self, host=DEFAULT_HOST, port=DEFAULT_PORT, timeout=30.0):
        self.host, self.port, self.timeout = host, port, timeout
        self._connection = None

    def _request(self, method, path, body=None):
        """(status, JSON body); one kept-alive connection, opened again after an error."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout
                )
            try:
                self._connection.request(method, path, body=data, headers=headers)
                response = self._connection.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException):
                self._connection.close()
                self._connection = None
                if attempt == 2:
                    raise
                continue
            try:
                return response.status, json.loads(raw) if raw else {}
            except ValueError:
                return response.status, {"raw": raw[:200].decode(errors="replace")}
        raise AssertionError("unreachable")

    def _ok(self, method, path, body=None):
        status, data = self._request(method, path, body)
        if status != 200:
            raise FakeError(f"{method} {path}: HTTP {status} {data}")
        return data

    # -- settings ------------------------------------------------------------------
    def settings(self):
        """The running fake's settings (both versions answer a POST of nothing)."""
        return self._ok("POST", "/_fake/config", {})

    def configure(self, values):
        """Set the settings this fake has; returns (applied, missing names)."""
        known = self.settings()
        applied = {name: value for name, value in values.items() if name in known}
        missing = sorted(set(values) - set(applied))
        if applied:
            self._ok("POST", "/_fake/config", applied)
        return applied, missing

    def compress(self, factor):
        """Shorten the per-account write windows `factor` times; the per-IP window stays real.

        Each person may then write `factor` times as fast as Bluesky allows one account, so
        M people ask for what M x factor people would at Bluesky's real limits."""
        return self.configure({name: real / factor for name, real in WRITE_WINDOWS.items()})

    def lift_limits(self):
        known = self.settings()
        if "rate_limits_enabled" in known:
            return self.configure({"rate_limits_enabled": False})
        return self.configure(_LIFTED)

    def restore_limits(self, factor=1.0):
        values = {name: real / factor for name, real in WRITE_WINDOWS.items()}
        known = self.settings()
        if "rate_limits_enabled" in known:
            values["rate_limits_enabled"] = True
        values.update(write_points_per_hour=5000, write_points_per_day=35000)
        return self.configure(values)

    # -- accounts --------------------------------------------------------------------
    def add_account(self, handle, password):
        return self._ok("POST", "/_fake/accounts", {"handle": handle, "password": password})

    def account(self, handle):
        """One account's truth: block records, distinct subjects, duplicates, subjects."""
        data = self.state(handle)
        return {
            "blocks": data["block_count"],
            "distinct": data["distinct_blocked"],
            "duplicates": data["duplicates"],
            "blocked": data.get("blocked", []),
        }

    def state(self, handle):
        """The fake's whole view of one account (/_fake/state?handle=)."""
        return self._ok("GET", f"/_fake/state?handle={handle}")

    def arrivals(self, subject, kind, per_minute):
        """Start (or, at 0 a minute, stop) a stream of new followers or engagers; the
        stream's summary: how many arrived so far."""
        body = {"subject": subject, "kind": kind, "per_minute": per_minute}
        return self._ok("POST", "/_fake/arrivals", body)

    def counters(self, handle):
        """One account's calls and refusals (which limiter, the newest 429), or None."""
        status, data = self._request("GET", f"/_fake/state?handle={handle}")
        if status != 200:
            return None
        keys = (
            "calls",
            "write_calls",
            "writes_refused",
            "rate_limited",
            "refused_by",
            "last_refusal",
        )
        return {key: data.get(key) for key in keys}

    def block_count(self, handle):
        status, data = self._request("GET", f"/_fake/state?handle={handle}")
        return data["block_count"] if status == 200 else None

    def totals(self):
        """Block records, duplicates, 429s and requests over every account, and requests,
        writes and 429s per client address, or None when this fake keeps no totals (the
        controller then counts blocks from the app)."""
        status, data = self._request("GET", "/_fake/state")
        if status != 200 or "totals" not in data:
            return None
        totals = data["totals"]
        return {
            "blocks": totals.get("blocks"),
            "duplicates": totals.get("duplicates"),
            "rate_limited": totals.get("rate_limited"),
            "ip_rate_limited": totals.get("ip_rate_limited"),
            "requests": totals.get("requests"),
            "addresses": totals.get("addresses"),
        }

    # -- faults ---------------------------------------------------------------------
    def faults(self, values):
        """Arm (or, with counts of 0, disarm) the fake's fault hooks: the hooks' state
        afterwards, or None when this fake has none. Keys: fail_status, fail_count,
        stall_s, stall_count, drop_count (see the fake's faults module)."""
        status, data = self._request("POST", "/_fake/faults", values)
        return data if status == 200 else None
