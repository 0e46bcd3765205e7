"""The fake Bluesky server: XRPC endpoints, rate-limit headers, sessions, test hooks."""

import itertools
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from . import graph

BLOCK = "app.bsky.graph.block"


@dataclass
class Config:
    # Per-account write budget, as Bluesky's: points per window; create 3, delete 1.
    write_points_per_hour: int = 5000
    write_points_per_day: int = 35000
    hour_window_s: float = 3600.0
    day_window_s: float = 86400.0
    # Seconds an access token lives; then 400 ExpiredToken until refreshed.
    access_token_ttl_s: float = 7200.0
    # Added to every request, in milliseconds.
    latency_ms: int = 0


@dataclass
class Account:
    did: str
    handle: str
    password: str
    revoked: bool = False
    follows: set = field(default_factory=set)
    blocks: dict = field(default_factory=dict)  # rkey -> subject DID
    mutes: set = field(default_factory=set)
    writes: deque = field(default_factory=deque)  # (time, points)
    write_calls: int = 0
    calls: int = 0  # every request made as (or signing in as) this account


class FakeBluesky:
    """All state, behind one lock. Thread-safe; the HTTP handler calls into it."""

    def __init__(self, config=None):
        self.config = config or Config()
        self.lock = threading.Lock()
        self.accounts = {}  # handle -> Account
        self.by_did = {}
        self.access = {}  # token -> (did, expires_at)
        self.refresh = {}  # token -> did
        self.requests = 0
        self.rate_limited = 0  # 429s sent
        self._rkeys = itertools.count(1)

    # -- test hooks ------------------------------------------------------
    def reset(self):
        with self.lock:
            self.config = Config()
            self.accounts.clear()
            self.by_did.clear()
            self.access.clear()
            self.refresh.clear()
            self.requests = 0
            self.rate_limited = 0

    def add_account(self, handle, password, follows=()):
        with self.lock:
            account = self.accounts.get(handle)
            if account is None:
                account = Account(
                    did=f"did:plc:acct{len(self.accounts) + 1}", handle=handle, password=password
                )
                self.accounts[handle] = account
                self.by_did[account.did] = account
            account.password = password
            account.revoked = False
            account.follows.update(follows)
            return account

    def revoke(self, handle):
        with self.lock:
            account = self.accounts[handle]
            account.revoked = True
            for table in (self.access, self.refresh):
                for token in [
                    t
                    for t, v in table.items()
                    if (v[0] if isinstance(v, tuple) else v) == account.did
                ]:
                    del table[token]

    def state(self, handle):
        with self.lock:
            account = self.accounts[handle]
            subjects = list(account.blocks.values())
            return {
                "did": account.did,
                "block_count": len(subjects),
                "distinct_blocked": len(set(subjects)),
                "duplicates": len(subjects) - len(set(subjects)),
                "blocked": sorted(set(subjects)),
                "muted": sorted(account.mutes),
                "write_calls": account.write_calls,
                "calls": account.calls,
                "requests": self.requests,
                "rate_limited": self.rate_limited,
            }

    # -- sessions ----------------------------------------------------------
    def _issue(self, account):
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.access[access] = (account.did, time.time() + self.config.access_token_ttl_s)
        self.refresh[refresh] = account.did
        return {
            "did": account.did,
            "handle": account.handle,
            "accessJwt": access,
            "refreshJwt": refresh,
            "active": True,
        }

    def create_session(self, body):
        with self.lock:
            ident = body.get("identifier", "")
            account = self.accounts.get(ident) or self.by_did.get(ident)
            if account:
                account.calls += 1
            if (
                not account
                or account.revoked
                or not secrets.compare_digest(body.get("password", ""), account.password)
            ):
                return 401, {
                    "error": "AuthenticationRequired",
                    "message": "Invalid identifier or password",
                }
            return 200, self._issue(account)

    def refresh_session(self, token):
        with self.lock:
            did = self.refresh.pop(token, None)
            if did is None or self.by_did[did].revoked:
                return 400, {"error": "ExpiredToken", "message": "Token has been revoked"}
            return 200, self._issue(self.by_did[did])

    def authenticate(self, token):
        with self.lock:
            entry = self.access.get(token)
            if entry is None:
                return None, (
                    400,
                    {"error": "InvalidToken", "message": "Token could not be verified"},
                )
            did, expires_at = entry
            self.by_did[did].calls += 1
            if time.time() >= expires_at:
                return None, (400, {"error": "ExpiredToken", "message": "Token has expired"})
            return self.by_did[did], None

    # -- reads ---------------------------------------------------------
    def _viewer(self, me, did):
        viewer = {"muted": did in me.mutes}
        for rkey, subject in me.blocks.items():
            if subject == did:
                viewer["blocking"] = f"at://{me.did}/{BLOCK}/{rkey}"
                break
        if did in me.follows:
            viewer["following"] = f"at://{me.did}/app.bsky.graph.follow/{did[-8:]}"
        return viewer

    def _profile(self, me, actor, detailed=False):
        found = graph.synthetic_profile(actor)
        if found:
            did, handle, followers = found
        else:
            account = self.accounts.get(actor) or self.by_did.get(actor)
            if account is None:
                return None
            did, handle, followers = account.did, account.handle, 0
        profile = {
            "did": did,
            "handle": handle,
            "displayName": handle.split(".")[0],
            "viewer": self._viewer(me, did),
        }
        if detailed:
            profile.update(followersCount=followers, followsCount=0, postsCount=0)
        return profile

    def get_profile(self, me, actor):
        with self.lock:
            profile = self._profile(me, actor, detailed=True)
        if profile is None:
            return 400, {"error": "InvalidRequest", "message": "Profile not found"}
        return 200, profile

    def get_profiles(self, me, actors):
        if len(actors) > 25:
            return 400, {
                "error": "InvalidRequest",
                "message": "actors must not have more than 25 elements",
            }
        with self.lock:
            found = [p for p in (self._profile(me, a, detailed=True) for a in actors) if p]
        return 200, {"profiles": found}

    def get_followers(self, me, actor, limit, cursor):
        target = graph.target_from_actor(actor)
        if target is None:
            with self.lock:
                subject = self._profile(me, actor)
            if subject is None:
                return 400, {"error": "InvalidRequest", "message": "Profile not found"}
            return 200, {"subject": subject, "followers": []}
        name, count = target
        start = int(cursor or 0)
        end = min(count, start + limit)
        with self.lock:
            followers = []
            for index in range(start, end):
                did, handle = graph.follower(name, count, index)
                followers.append({"did": did, "handle": handle, "viewer": self._viewer(me, did)})
            subject = self._profile(me, actor)
        body = {"subject": subject, "followers": followers}
        if end < count:
            body["cursor"] = str(end)
        return 200, body

    def get_blocks(self, me, limit, cursor):
        with self.lock:
            items = sorted(me.blocks.items())
        start = int(cursor or 0)
        page = items[start : start + limit]
        body = {
            "blocks": [
                {
                    "did": subject,
                    "handle": "",
                    "viewer": {"blocking": f"at://{me.did}/{BLOCK}/{rkey}"},
                }
                for rkey, subject in page
            ]
        }
        if start + limit < len(items):
            body["cursor"] = str(start + limit)
        return 200, body

    # -- writes and their rate limit ---------------------------------------
    def _spend(self, me, points):
        """(ok, headers): charge the account's hourly and daily write budgets."""
        now = time.time()
        while me.writes and me.writes[0][0] <= now - self.config.day_window_s:
            me.writes.popleft()
        hour_used = sum(p for t, p in me.writes if t > now - self.config.hour_window_s)
        day_used = sum(p for _, p in me.writes)
        limit, window, used = (
            self.config.write_points_per_hour,
            self.config.hour_window_s,
            hour_used,
        )
        if self.config.write_points_per_day - day_used < limit - hour_used:
            limit, window, used = (
                self.config.write_points_per_day,
                self.config.day_window_s,
                day_used,
            )
        in_window = [t for t, _ in me.writes if t > now - window]
        reset = int((in_window[0] if in_window else now) + window) + 1
        ok = used + points <= limit
        if ok:
            me.writes.append((now, points))
            used += points
        headers = {
            "ratelimit-limit": str(limit),
            "ratelimit-remaining": str(max(0, limit - used)),
            "ratelimit-reset": str(reset),
            "ratelimit-policy": f"{limit};w={int(window)}",
        }
        return ok, headers

    def apply_writes(self, me, body):
        writes = body.get("writes") or []
        if body.get("repo") not in (me.did, me.handle):
            return (
                400,
                {"error": "InvalidRequest", "message": "repo must be the signed-in account"},
                {},
            )
        if not 0 < len(writes) <= 200:
            return (
                400,
                {"error": "InvalidRequest", "message": "writes must have 1-200 elements"},
                {},
            )
        points = sum(3 if w.get("$type", "").endswith("#create") else 1 for w in writes)
        with self.lock:
            ok, headers = self._spend(me, points)
            if not ok:
                self.rate_limited += 1
                return (
                    429,
                    {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"},
                    headers,
                )
            me.write_calls += 1
            results = []
            for write in writes:
                kind = write.get("$type", "")
                if write.get("collection") != BLOCK:
                    return (
                        400,
                        {"error": "InvalidRequest", "message": "unsupported collection"},
                        headers,
                    )
                if kind.endswith("#create"):
                    rkey = write.get("rkey") or f"3k{next(self._rkeys):011d}"
                    me.blocks[rkey] = write["value"]["subject"]
                    results.append(
                        {
                            "$type": "com.atproto.repo.applyWrites#createResult",
                            "uri": f"at://{me.did}/{BLOCK}/{rkey}",
                            "cid": "bafyfake" + rkey,
                        }
                    )
                elif kind.endswith("#delete"):
                    me.blocks.pop(write.get("rkey"), None)
                    results.append({"$type": "com.atproto.repo.applyWrites#deleteResult"})
                else:
                    return (
                        400,
                        {"error": "InvalidRequest", "message": f"unknown write {kind}"},
                        headers,
                    )
        return (
            200,
            {"commit": {"cid": "bafycommit", "rev": str(time.time_ns())}, "results": results},
            headers,
        )

    def mute(self, me, actor, on):
        with self.lock:
            profile = self._profile(me, actor)
            if profile is None:
                return 400, {"error": "InvalidRequest", "message": "Profile not found"}
            (me.mutes.add if on else me.mutes.discard)(profile["did"])
        return 200, None


class Handler(BaseHTTPRequestHandler):
    server_version = "fakesky/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: tests read state, not logs
        pass

    @property
    def fake(self) -> FakeBluesky:
        return self.server.fake

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return None

    def _reply(self, status, body=None, headers=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        self.fake.requests += 1
        if self.fake.config.latency_ms:
            time.sleep(self.fake.config.latency_ms / 1000)
        body = self._body() if method == "POST" else {}
        if body is None:
            return self._reply(400, {"error": "InvalidRequest", "message": "body is not JSON"})
        if url.path.startswith("/_fake/"):
            return self._test_hook(method, url.path[len("/_fake/") :], query, body)
        if not url.path.startswith("/xrpc/"):
            return self._reply(404, {"error": "NotFound", "message": "no such endpoint"})
        nsid = url.path[len("/xrpc/") :]
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        if nsid == "com.atproto.server.createSession" and method == "POST":
            return self._reply(*self.fake.create_session(body))
        if nsid == "com.atproto.server.refreshSession" and method == "POST":
            return self._reply(*self.fake.refresh_session(token))
        me, error = self.fake.authenticate(token)
        if error:
            return self._reply(*error)
        first = lambda name, default=None: (query.get(name) or [default])[0]  # noqa: E731
        limit = min(100, max(1, int(first("limit", "50"))))
        routes = {
            ("GET", "app.bsky.actor.getProfile"): lambda: self.fake.get_profile(
                me, first("actor", "")
            ),
            ("GET", "app.bsky.actor.getProfiles"): lambda: self.fake.get_profiles(
                me, query.get("actors", [])
            ),
            ("GET", "app.bsky.graph.getFollowers"): lambda: self.fake.get_followers(
                me, first("actor", ""), limit, first("cursor")
            ),
            ("GET", "app.bsky.graph.getBlocks"): lambda: self.fake.get_blocks(
                me, limit, first("cursor")
            ),
            ("POST", "app.bsky.graph.muteActor"): lambda: self.fake.mute(
                me, body.get("actor", ""), True
            ),
            ("POST", "app.bsky.graph.unmuteActor"): lambda: self.fake.mute(
                me, body.get("actor", ""), False
            ),
        }
        if (method, nsid) == ("POST", "com.atproto.repo.applyWrites"):
            return self._reply(*self.fake.apply_writes(me, body))
        route = routes.get((method, nsid))
        if route is None:
            return self._reply(501, {"error": "MethodNotImplemented", "message": nsid})
        return self._reply(*route())

    def _test_hook(self, method, name, query, body):
        fake = self.fake
        if name == "accounts" and method == "POST":
            account = fake.add_account(body["handle"], body["password"], body.get("follows", ()))
            return self._reply(200, {"did": account.did, "handle": account.handle})
        if name == "reset" and method == "POST":
            fake.reset()
            return self._reply(200, {})
        if name == "revoke" and method == "POST":
            fake.revoke(body["handle"])
            return self._reply(200, {})
        if name == "config" and method == "POST":
            for key, value in body.items():
                if not hasattr(fake.config, key):
                    return self._reply(
                        400, {"error": "InvalidRequest", "message": f"unknown setting {key}"}
                    )
                setattr(fake.config, key, type(getattr(fake.config, key))(value))
            return self._reply(200, vars(fake.config))
        if name == "state" and method == "GET":
            handle = (query.get("handle") or [""])[0]
            if handle not in fake.accounts:
                return self._reply(404, {"error": "NotFound", "message": handle})
            return self._reply(200, fake.state(handle))
        return self._reply(404, {"error": "NotFound", "message": name})


def serve(host="127.0.0.1", port=0, config=None):
    """Start the server in a background thread; returns (server, base_url)."""
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.fake = FakeBluesky(config)
    threading.Thread(target=server.serve_forever, name="fakesky", daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}"
