"""A fake account: identity, app password, status, its repository and what the AppView has seen."""

from dataclasses import MISSING, dataclass, field, fields

from .repo import Repo

# packages/pds/src/auth-verifier.ts findAccount: what a write to such a repo answers.
STATUS_ERRORS = {
    "takendown": (401, "AccountTakedown", "Account has been taken down"),
    "deactivated": (401, "AccountDeactivated", "Account is deactivated"),
}
# packages/bsky/src/api/app/bsky/actor/getProfile.ts: what a profile of one answers.
PROFILE_ERRORS = {
    "takendown": (400, "AccountTakedown", "Account has been suspended"),
    "deactivated": (400, "AccountDeactivated", "Account is deactivated"),
}


@dataclass(eq=False)
class Account:
    did: str
    handle: str
    password: str
    password_revoked: bool = False
    status: str | None = None  # None (active), "takendown" or "deactivated"
    follows: dict = field(default_factory=dict)  # followed DID -> follow record rkey
    repo: Repo = field(default_factory=Repo)
    mutes: set = field(default_factory=set)  # what the person asked for, at once
    # The AppView's view, which trails the repository by Config.indexing_delay_s.
    seen_blocks: dict = field(default_factory=dict)  # subject -> set of rkeys
    seen_block_rkeys: list = field(default_factory=list)  # sorted, for getBlocks
    seen_block_subject: dict = field(default_factory=dict)  # rkey -> subject
    seen_mutes: set = field(default_factory=set)
    # Blocked synthetic followers by target, (key, count) -> set of follower indexes, so a
    # page of followers is filtered without computing the DID of anyone it drops.
    seen_follower_blocks: dict = field(default_factory=dict)
    # Counters for /_fake/state.
    calls: int = 0  # requests made as (or signing in as) this account
    calls_by_method: dict = field(default_factory=dict)  # NSID -> calls, of known methods
    write_calls: int = 0  # writes that committed
    writes_refused: int = 0  # writes answered with an error, 429s included
    rate_limited: int = 0  # 429s sent to this account
    refused_by: dict = field(default_factory=dict)  # limiter name -> 429s it gave
    last_refusal: dict | None = None  # the newest 429: limiter, at, points, reset_at
    logins: int = 0
    refreshes: int = 0

    def __setstate__(self, state):
        """A state file written by an older fake lacks the newer fields: their defaults."""
        defaults = {}
        for f in fields(self):
            if f.name in state:
                continue
            if f.default_factory is not MISSING:
                defaults[f.name] = f.default_factory()
            elif f.default is not MISSING:
                defaults[f.name] = f.default
        self.__dict__.update(defaults, **state)

    def summary(self):
        return {
            "did": self.did,
            "handle": self.handle,
            "status": self.status or "active",
            "password_revoked": self.password_revoked,
            "block_count": len(self.repo),
            "distinct_blocked": len(self.repo.by_subject),
            "duplicates": self.repo.duplicates,
            "muted_count": len(self.mutes),
            "calls": self.calls,
            "calls_by_method": dict(self.calls_by_method),
            "write_calls": self.write_calls,
            "writes_refused": self.writes_refused,
            "rate_limited": self.rate_limited,
            "refused_by": dict(self.refused_by),
            "last_refusal": self.last_refusal,
            "logins": self.logins,
            "refreshes": self.refreshes,
        }
