"""Faults on demand, for the fault suite: set through POST /_fake/faults, each for the next N calls.

- ``fail_status`` / ``fail_count``: answer 500, 502 or 503 instead of doing the call (what a
  load balancer or an overloaded PDS answers);
- ``stall_s`` / ``stall_count``: hold the call that many seconds before doing it;
- ``drop_count``: do the write (applyWrites, createRecord, deleteRecord), then close the
  connection without an answer, so the client cannot know that it was applied;
- ``only``: a list of NSIDs the faults apply to (empty: every XRPC call).
Revoking an app password and taking an account down have hooks of their own.
"""

from dataclasses import asdict, dataclass, field

FAIL_STATUSES = {
    500: ("InternalServerError", "Internal Server Error"),
    502: ("UpstreamFailure", "Upstream Failure"),
    503: ("NotEnoughResources", "Not Enough Resources"),
}
WRITES = {
    "com.atproto.repo.applyWrites",
    "com.atproto.repo.createRecord",
    "com.atproto.repo.deleteRecord",
}


@dataclass
class Faults:
    fail_status: int = 503
    fail_count: int = 0
    stall_s: float = 0.0
    stall_count: int = 0
    drop_count: int = 0
    only: list = field(default_factory=list)
    injected: int = 0  # faults applied so far

    def arm(self, values):
        for name, value in values.items():
            if name not in (
                "fail_status",
                "fail_count",
                "stall_s",
                "stall_count",
                "drop_count",
                "only",
            ):
                raise ValueError(f"unknown fault {name}")
            setattr(self, name, value if name == "only" else type(getattr(self, name))(value))
        if self.fail_status not in FAIL_STATUSES:
            raise ValueError(f"fail_status must be one of {sorted(FAIL_STATUSES)}")
        if min(self.fail_count, self.stall_count, self.drop_count, self.stall_s) < 0:
            raise ValueError("fault counts and stall_s must not be negative")
        if not isinstance(self.only, list):
            raise ValueError("only must be a list of NSIDs")
        return self

    def _applies(self, nsid):
        return not self.only or nsid in self.only

    def before(self, nsid):
        """(seconds to stall, status to fail with or None) for this call; counts them down."""
        if not self._applies(nsid):
            return 0.0, None
        stall = fail = None
        if self.stall_count > 0:
            self.stall_count -= 1
            self.injected += 1
            stall = self.stall_s
        if self.fail_count > 0:
            self.fail_count -= 1
            self.injected += 1
            fail = self.fail_status
        return stall or 0.0, fail

    def drop_after(self, nsid):
        """True: this write is applied and its answer never sent."""
        if nsid in WRITES and self._applies(nsid) and self.drop_count > 0:
            self.drop_count -= 1
            self.injected += 1
            return True
        return False

    def report(self):
        return asdict(self)
