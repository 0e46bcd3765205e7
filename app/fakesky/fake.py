"""The fake network: one object that is entryway, PDS and AppView, behind one lock.

An XRPC call goes through the steps of the reference server (bluesky-social/atproto
packages/xrpc-server/src/server.ts): a method the PDS serves itself checks its parameters,
its bearer token, its input, then its rate limits (the route's and the per-address one),
then runs; an app.bsky.* method, which the PDS proxies to the AppView, spends the
per-address limit first. A call made with an OAuth token (`Authorization: DPoP`) is checked
by oauth.py as the PDS's oauth() verifier checks it, then its scope (scopes.py) where the
reference checks it. The modules beside this one say which reference file each rule comes from.
"""

import contextlib
import os
import pickle
import secrets
import threading
import time
from dataclasses import dataclass, field, replace

from . import arrivals, graph, limits, oauth, posts, tokens
from .accounts import STATUS_ERRORS, Account
from .appview import AppView
from .config import Config
from .faults import FAIL_STATUSES, Faults
from .feed import Feed
from .repo import BLOCK, CREATE, DELETE, RESULT_TYPES, UPDATE, XrpcError, prepare
from .syntax import TidClock, cid_for, is_record_key, multikey_for

SERVICE_DID = "did:web:fakesky.test"  # the "aud" of every session token
RATE_LIMITED = (429, "RateLimitExceeded", "Rate Limit Exceeded")
AUTH_REQUIRED = (401, "AuthenticationRequired", "Authentication Required")
BAD_LOGIN = (401, "AuthenticationRequired", "Invalid identifier or password")


@dataclass
class Request:
    method: str
    nsid: str
    params: dict  # name -> list of values
    body: object  # parsed JSON, or None when there was none or it was not JSON
    content_type: str
    token: str | None
    client_ip: str
    auth_scheme: str | None = None  # "Bearer" or "DPoP" (OAuth), with token
    dpop: tuple = ()  # the DPoP headers' values
    path: str = ""  # /xrpc/<nsid>, what a DPoP proof's "htu" names
    atproto_proxy: str | None = None  # the atproto-proxy header: the "aud" of rpc: scopes


@dataclass
class Answer:
    status: int = 200
    body: dict | None = None
    headers: dict = field(default_factory=dict)
    drop: bool = False  # close the connection instead of answering


@dataclass(frozen=True)
class Route:
    method: str
    handler: str
    proxied: bool = False  # an app.bsky.* call the PDS hands to the AppView
    auth: str = "access"  # "access", "optional", "refresh" or "none"
    input: tuple = ()  # required properties of a JSON input
    limits: str = "global"  # "global", "session" or "write"


ROUTES = {
    "com.atproto.server.createSession": Route(
        "POST", "create_session", auth="none", input=("identifier", "password"), limits="session"
    ),
    "com.atproto.server.refreshSession": Route("POST", "refresh_session", auth="refresh"),
    "com.atproto.server.getSession": Route("GET", "get_session"),
    "com.atproto.identity.resolveHandle": Route("GET", "resolve_handle", auth="none"),
    "com.atproto.repo.createRecord": Route(
        "POST", "create_record", input=("repo", "collection", "record"), limits="write"
    ),
    "com.atproto.repo.deleteRecord": Route(
        "POST", "delete_record", input=("repo", "collection", "rkey"), limits="write"
    ),
    "com.atproto.repo.applyWrites": Route(
        "POST", "apply_writes", input=("repo", "writes"), limits="write"
    ),
    "com.atproto.repo.getRecord": Route("GET", "get_record", auth="none"),
    "com.atproto.repo.listRecords": Route("GET", "list_records", auth="none"),
    "app.bsky.actor.getProfile": Route("GET", "get_profile", proxied=True, auth="optional"),
    "app.bsky.actor.getProfiles": Route("GET", "get_profiles", proxied=True, auth="optional"),
    "app.bsky.graph.getFollowers": Route("GET", "get_followers", proxied=True, auth="optional"),
    "app.bsky.graph.getBlocks": Route("GET", "get_blocks", proxied=True),
    "app.bsky.graph.muteActor": Route("POST", "mute_actor", proxied=True, input=("actor",)),
    "app.bsky.graph.unmuteActor": Route("POST", "unmute_actor", proxied=True, input=("actor",)),
    "app.bsky.feed.getPosts": Route("GET", "get_posts", proxied=True, auth="optional"),
    "app.bsky.feed.getLikes": Route("GET", "get_likes", proxied=True, auth="optional"),
    "app.bsky.feed.getRepostedBy": Route("GET", "get_reposted_by", proxied=True, auth="optional"),
    "app.bsky.feed.getQuotes": Route("GET", "get_quotes", proxied=True, auth="optional"),
    "app.bsky.feed.getPostThread": Route("GET", "get_post_thread", proxied=True, auth="optional"),
}


class Call:
    """One XRPC call in flight: the request, the clock, who made it, what to answer."""

    def __init__(self, request, now):
        self.request, self.now = request, now
        self.account = None  # the signed-in account, once the token was checked
        self.permissions = None  # an OAuth token's scopes (scopes.Permissions)
        self.refresh_jti = None
        self.signing_in = False  # createSession reached the password check
        self.headers = {}
        self.refusal = None  # the limiter that answered 429, and its numbers

    def param(self, name, default=None):
        values = self.request.params.get(name)
        return values[0] if values else default

    def int_param(self, name, default, minimum, maximum):
        raw = self.param(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise XrpcError.invalid(f"Error: {name} must be an integer") from None
        if value < minimum:
            raise XrpcError.invalid(f"Error: {name} can not be less than {minimum}")
        if value > maximum:
            raise XrpcError.invalid(f"Error: {name} can not be greater than {maximum}")
        return value

    def required(self, name):
        value = self.param(name)
        if not value:
            raise XrpcError.invalid(f'Error: Params must have the property "{name}"')
        return value


class FakeBluesky:
    """All state, behind one lock. The HTTP handler (server.py) calls handle()."""

    def __init__(self, config=None):
        self.lock = threading.Lock()
        self.config = (config or Config()).validate()
        self._initial_config = replace(self.config)
        self.own_url = "http://127.0.0.1"
        # ("account", handle, password), ("target", handle, count),
        # ("post", author handle, rkey, (likes, reposts, quotes, replies)) or
        # ("arrivals", subject, kind, per_minute, backdate_every)
        self.seeds = []
        self.tids = TidClock()
        self._clear()

    # -- surviving a restart ----------------------------------------------------
    # Bluesky does not forget accounts, sessions and records when the host running this
    # appliance restarts; the fake, which runs on that host, keeps them in a state file
    # written when it stops (python3 -m fakesky --state-file). Fault hooks are not kept.
    def __getstate__(self):
        state = self.__dict__.copy()
        del state["lock"], state["faults"]
        return state

    def __setstate__(self, state):
        state.setdefault("posts", posts.Posts())  # a state file from before posts
        state.setdefault("by_address", {})  # one from before the per-address counts
        state.setdefault("arrivals", arrivals.Arrivals())  # ... or before arrivals
        state.setdefault("feed", Feed(self))
        state.setdefault("oauth", oauth.OAuth(self, SERVICE_DID))  # ... or before OAuth
        self.__dict__.update(state)
        self.lock = threading.Lock()
        self.faults = Faults()

    def save(self, path):
        """Write the whole state to path (root or the service's user only), atomically."""
        with self.lock:
            data = pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)
        partial = f"{path}.new"
        with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            out.write(data)
        os.replace(partial, path)

    @classmethod
    def restore(cls, path, config):
        """The state a stopped fake saved, if it ran with the same start-up settings, else
        None; the file is consumed either way, so a crash later never brings back old state."""
        try:
            with open(path, "rb") as saved:
                fake = pickle.load(saved)  # noqa: S301 - our own file, mode 0600
        except FileNotFoundError:
            return None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if not isinstance(fake, cls) or fake._initial_config != config.validate():
            return None
        return fake

    def _clear(self):
        self.accounts = {}  # handle -> Account
        self.by_did = {}
        self.followers_of = {}  # DID -> {follower DID: follow rkey}
        self.targets = graph.Targets()
        self.posts = posts.Posts()
        self.arrivals = arrivals.Arrivals()
        self.refresh_tokens = {}  # jti -> [did, expires_at, next jti or None]
        self.refresh_by_did = {}  # did -> set of jti
        self.secret = secrets.token_bytes(32)
        self.windows = limits.FixedWindows()
        self.appview = AppView(self)
        self.feed = Feed(self)
        self.faults = Faults()
        self.oauth = oauth.OAuth(self, SERVICE_DID)
        self.requests = 0
        self.rate_limited = 0
        self.ip_rate_limited = 0
        # Per client address (each worker host's own on a test network): its requests, its
        # write calls answered 200, and its refusals by the per-address limit.
        self.by_address = {}

    # -- test hooks and seeding ------------------------------------------------
    def reset(self):
        """Forget everything; keep the start-up settings, accounts and targets."""
        with self.lock:
            self.config = replace(self._initial_config)
            self._clear()
            seeds, self.seeds = self.seeds, []
        for seed in seeds:
            if seed[0] == "account":
                self.add_account(seed[1], seed[2])
            elif seed[0] == "target":
                self.add_target(seed[1], seed[2])
            elif seed[0] == "post":
                self.add_post(seed[1], seed[2], *seed[3])
            else:
                self.add_arrivals(*seed[1:])
            self.seeds.append(seed)

    def add_account(self, handle, password, follows=(), seed=False):
        handle = handle.lower()
        with self.lock:
            account = self.accounts.get(handle)
            if account is None:
                account = Account(did=graph.account_did(handle), handle=handle, password=password)
                self.accounts[handle] = account
                self.by_did[account.did] = account
            account.password = password
            account.password_revoked = False
            for did in follows:
                if did not in account.follows:
                    rkey = self.tids.next()
                    account.follows[did] = rkey
                    self.followers_of.setdefault(did, {})[account.did] = rkey
            if seed:
                self.seeds.append(("account", handle, password))
            return account

    def add_target(self, handle, count, seed=False):
        with self.lock:
            if "." not in handle:
                target = self.targets.by_handle(f"{handle}-{count}{graph.SUFFIX}")
                if target is None:
                    raise ValueError(f"a bare target name is 1-10 letters a-z: {handle}")
            else:
                target = self.targets.register(handle, count)
            if seed:
                self.seeds.append(("target", handle, count))
            return target

    def add_post(self, author, rkey, likes=0, reposts=0, quotes=0, replies=0, seed=False):
        """A post of a handle the fake knows, with computed engagement (posts.py)."""
        counts = (likes, reposts, quotes, replies)
        with self.lock:
            found = self.appview.actor(str(author))
            if found is None:
                raise ValueError(f"post author is no account or target the fake knows: {author}")
            post = self.posts.add(found[0], found[1], rkey, counts)
            if seed:
                self.seeds.append(("post", author, rkey, counts))
            return post

    def add_arrivals(self, subject, kind, per_minute, backdate_every=0, seed=False):
        """New followers of a target or engagers of a post from now on (arrivals.py)."""
        with self.lock:
            self.arrivals.tick(time.time())
            stream = self.arrivals.start(
                *self._arrivals_subject(str(subject), kind), per_minute, backdate_every
            )
            if seed:
                self.seeds.append(("arrivals", subject, kind, per_minute, backdate_every))
            return stream.summary(self.arrivals.arrived(stream))

    def _arrivals_subject(self, subject, kind):
        """(kind code, Target or Post) of a stream; ValueError naming what is wrong."""
        if kind not in arrivals.KINDS:
            raise ValueError(f"arrivals kind must be one of {', '.join(arrivals.KINDS)}: {kind!r}")
        if kind == "followers":
            found = self.targets.resolve(subject)
            if found is None or found[0] != "target":
                raise ValueError(
                    f"arrivals of followers need a synthetic target (NAME-COUNT.fake.test or"
                    f" --target): {subject}"
                )
            return arrivals.FOLLOWERS, found[1]
        ref = self.posts.resolve(self.feed.resolve_uri(subject))
        if ref is None or ref[1] is not None:
            raise ValueError(f"arrivals of {kind} need a seeded post's at:// URI: {subject}")
        return arrivals.KINDS.index(kind), ref[0]

    def revoke(self, handle):
        """Revoke the app password: sign-in and refresh fail; access tokens live out their
        time (they are not checked against the password, as in the reference)."""
        with self.lock:
            account = self._by_handle(handle)
            account.password_revoked = True
            for jti in self.refresh_by_did.pop(account.did, set()):
                self.refresh_tokens.pop(jti, None)

    def set_status(self, handle, status):
        if status not in (None, "active", *STATUS_ERRORS):
            raise ValueError(f"status must be active, takendown or deactivated, not {status}")
        with self.lock:
            self._by_handle(handle).status = None if status == "active" else status

    def _by_handle(self, handle):
        account = self.accounts.get(handle.lower())
        if account is None:
            raise KeyError(handle)
        return account

    def state(self, handle=None):
        with self.lock:
            now = time.time()
            self.appview.catch_up(now)
            self.arrivals.tick(now)
            totals = {
                "requests": self.requests,
                "rate_limited": self.rate_limited,
                "ip_rate_limited": self.ip_rate_limited,
                "addresses": {address: dict(counts) for address, counts in self.by_address.items()},
                "accounts": len(self.accounts),
                "blocks": sum(len(a.repo) for a in self.accounts.values()),
                "duplicates": sum(a.repo.duplicates for a in self.accounts.values()),
                "writes_refused": sum(a.writes_refused for a in self.accounts.values()),
                "indexing_pending": self.appview.pending(),
                "faults": self.faults.report(),
                "oauth": self.oauth.summary(),
            }
            if handle is None:
                return {
                    "totals": totals,
                    "accounts": [a.summary() for a in self.accounts.values()],
                    "targets": [
                        {"handle": t.handle, "did": t.did, "followers": t.count}
                        for t in self.targets.registered()
                    ],
                    "posts": [p.summary() for p in self.posts.all()],
                    "arrivals": self.arrivals.summaries(),
                }
            account = self._by_handle(handle)
            detail = account.summary()
            detail.update(
                blocked=sorted(account.repo.by_subject),
                muted=sorted(account.mutes),
                requests=self.requests,
                totals=totals,
            )
            return detail

    # -- the XRPC entry point ----------------------------------------------------
    def handle(self, request):
        """Answer one XRPC call. Sleeps (latency, stalls, the sign-in floor) outside the lock."""
        with self.lock:
            stall, fail = self.faults.before(request.nsid)
            latency = self.config.latency_ms / 1000
            login_floor = self.config.login_min_ms / 1000
        if stall or latency:
            time.sleep(stall + latency)
        if fail is not None:
            return Answer(fail, _error(*FAIL_STATUSES[fail]))
        started = time.perf_counter()
        with self.lock:
            began = time.perf_counter()
            self.requests += 1
            now = time.time()
            self.appview.catch_up(now)
            self.arrivals.tick(now)
            call = Call(request, now)
            answer = self._run(call)
            answer.headers = {**call.headers, **answer.headers}
            self._count(call, answer)
            if answer.status == 200 and self.faults.drop_after(request.nsid):
                answer.drop = True
            answer.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - began) * 1000:.3f}"
        if call.signing_in:
            # account-manager.ts login(): "Mitigate timing attacks", 350 ms at least.
            time.sleep(max(0.0, login_floor - (time.perf_counter() - started)))
        return answer

    def _run(self, call):
        request = call.request
        route = ROUTES.get(request.nsid)
        try:
            if route is None or route.proxied:
                # The PDS's catch-all spends the per-address limit, then proxies.
                self._spend(call, [self._ip_limit(call)])
            if route is None:
                return Answer(501, _error("MethodNotImplemented", "Method Not Implemented"))
            if request.method != route.method:
                raise XrpcError.invalid(
                    f"Incorrect HTTP method ({request.method}) expected {route.method}"
                )
            self._authenticate(call, route)
            if route.method == "POST" and route.auth != "refresh":
                self._check_input(call, route)
            if not route.proxied:
                self._spend(call, self._route_limits(call, route))
            body = getattr(self, route.handler)(call)
        except XrpcError as error:
            return Answer(error.status, _error(error.error, error.message))
        return Answer(200, body)

    def _count(self, call, answer):
        who = call.account or self._attribute(call)
        route = ROUTES.get(call.request.nsid)
        counts = self.by_address.setdefault(
            call.request.client_ip, {"requests": 0, "writes": 0, "ip_rate_limited": 0}
        )
        counts["requests"] += 1
        if route is not None and route.limits == "write" and answer.status == 200:
            counts["writes"] += 1
        if call.refusal is not None and call.refusal["limiter"] == "global-ip":
            counts["ip_rate_limited"] += 1
        if who is not None:
            who.calls += 1
            if route is not None:  # known names only: a client cannot grow the dict
                nsid = call.request.nsid
                who.calls_by_method[nsid] = who.calls_by_method.get(nsid, 0) + 1
        if answer.status == 429:
            self.rate_limited += 1
            if who is not None:
                who.rate_limited += 1
                if call.refusal is not None:
                    name = call.refusal["limiter"]
                    who.refused_by[name] = who.refused_by.get(name, 0) + 1
                    who.last_refusal = call.refusal
        if route is not None and route.limits == "write" and who is not None:
            if answer.status == 200:
                who.write_calls += 1
            else:
                who.writes_refused += 1

    def _attribute(self, call):
        """The account a call was made for, when its token was not (or not yet) checked."""
        request = call.request
        if request.nsid == "com.atproto.server.createSession" and isinstance(request.body, dict):
            identifier = str(request.body.get("identifier", "")).lower()
            return self.accounts.get(identifier) or self.by_did.get(identifier)
        if request.token:
            return self.by_did.get(tokens.unverified_subject(request.token))
        return None

    # -- authentication ----------------------------------------------------------
    def _authenticate(self, call, route):
        token = call.request.token
        if route.auth == "none" or (route.auth == "optional" and not token):
            return
        if not token or (call.request.auth_scheme == "DPoP" and route.auth == "refresh"):
            raise XrpcError(401, "AuthMissing", "Authentication Required")
        if call.request.auth_scheme == "DPoP":
            return self._authenticate_oauth(call, route)
        try:
            if route.auth == "refresh":
                claims = tokens.verify(
                    self.secret,
                    token,
                    tokens.REFRESH_TYP,
                    (tokens.SCOPE_REFRESH,),
                    SERVICE_DID,
                    call.now,
                )
                call.refresh_jti = claims.get("jti")
                if not call.refresh_jti:
                    raise XrpcError(401, "MissingTokenId", "Unexpected missing refresh token id")
            else:
                claims = tokens.verify(
                    self.secret,
                    token,
                    tokens.ACCESS_TYP,
                    tokens.ACCESS_SCOPES,
                    SERVICE_DID,
                    call.now,
                )
        except tokens.TokenError as error:
            message = error.message
            if message == "Bad token scope" and oauth.is_dpop_bound(token):
                message = "Malformed token"  # auth-verifier.ts: a "cnf" claim, an OAuth token
            raise XrpcError.invalid(message, error.error) from None
        account = self.by_did.get(claims["sub"])
        if account is None:
            raise XrpcError(403, "AccountNotFound", "Account not found")
        call.account = account

    def _authenticate_oauth(self, call, route):
        """auth-verifier.ts oauth(): a DPoP-bound access token (oauth.py); then the scope an
        app.bsky.* call needs, rpc:<method> at the AppView (pipethrough.ts computeProxyTo)."""
        did, call.permissions = self.oauth.authenticate_xrpc(call)
        account = self.by_did.get(did)
        if account is None:
            raise XrpcError(403, "AccountNotFound", "Account not found")
        call.account = account
        if route.proxied:
            aud = call.request.atproto_proxy or f"{self.config.appview_did}#bsky_appview"
            self.oauth.check_scope(call, "rpc", call.request.nsid, aud)

    def _issue(self, account, now, jti=None):
        """A fresh access and refresh token pair, as createTokens() makes them."""
        iat = int(now)
        access = tokens.sign(
            self.secret,
            tokens.ACCESS_TYP,
            {
                "scope": tokens.SCOPE_APP_PASS,
                "aud": SERVICE_DID,
                "sub": account.did,
                "iat": iat,
                "exp": int(now + self.config.access_token_ttl_s),
            },
        )
        jti = jti or secrets.token_urlsafe(24)
        expires_at = now + self.config.refresh_token_ttl_s
        refresh = tokens.sign(
            self.secret,
            tokens.REFRESH_TYP,
            {
                "scope": tokens.SCOPE_REFRESH,
                "aud": SERVICE_DID,
                "sub": account.did,
                "jti": jti,
                "iat": iat,
                "exp": int(expires_at),
            },
        )
        self.refresh_tokens.setdefault(jti, [account.did, expires_at, None])
        self.refresh_by_did.setdefault(account.did, set()).add(jti)
        return access, refresh

    def _session_body(self, account, access, refresh):
        body = {
            "accessJwt": access,
            "refreshJwt": refresh,
            "did": account.did,
            "didDoc": self.did_doc(account),
            "handle": account.handle,
            "emailConfirmed": False,
            "active": account.status is None,
        }
        if account.status:
            body["status"] = account.status
        return body

    def did_doc(self, account):
        return {
            "@context": [
                "https://www.w3.org/ns/did/v1",
                "https://w3id.org/security/multikey/v1",
                "https://w3id.org/security/suites/secp256k1-2019/v1",
            ],
            "id": account.did,
            "alsoKnownAs": [f"at://{account.handle}"],
            "verificationMethod": [
                {
                    "id": f"{account.did}#atproto",
                    "type": "Multikey",
                    "controller": account.did,
                    "publicKeyMultibase": multikey_for(account.did),
                }
            ],
            "service": [
                {
                    "id": "#atproto_pds",
                    "type": "AtprotoPersonalDataServer",
                    "serviceEndpoint": self.config.public_url or self.own_url,
                }
            ],
        }

    # -- input and limits ----------------------------------------------------------
    def _check_input(self, call, route):
        request = call.request
        if not route.input and request.body is None:
            return
        if not request.content_type.startswith("application/json"):
            raise XrpcError.invalid(
                f"Wrong request encoding (Content-Type): {request.content_type or 'none'}"
            )
        if not isinstance(request.body, dict):
            raise XrpcError.invalid("Input must be an object")
        for name in route.input:
            if name not in request.body:
                raise XrpcError.invalid(f'Input must have the property "{name}"')
        if request.nsid == "com.atproto.repo.applyWrites":
            writes = request.body["writes"]
            if not isinstance(writes, list):
                raise XrpcError.invalid("Input/writes must be an array")
            for index, write in enumerate(writes):
                if not isinstance(write, dict) or write.get("$type") not in RESULT_TYPES:
                    raise XrpcError.invalid(
                        f"Input/writes/{index} must be an object which includes the"
                        f' "$type" property of {", ".join(RESULT_TYPES)}'
                    )

    def _ip_limit(self, call):
        config = self.config
        return (
            "global-ip",
            call.request.client_ip,
            1,
            config.ip_requests_per_window,
            config.ip_window_s,
        )

    def _route_limits(self, call, route):
        config = self.config
        if route.limits == "session":
            key = f"{call.request.body['identifier']}-{call.request.client_ip}"
            return [
                ("session-day", key, 1, config.sessions_per_day, config.session_day_window_s),
                ("session-5min", key, 1, config.sessions_per_window, config.session_window_s),
                self._ip_limit(call),
            ]
        if route.limits == "write":
            points = self._write_points(call.request)
            did = call.account.did
            return [
                (
                    "repo-write-hour",
                    did,
                    points,
                    config.write_points_per_hour,
                    config.hour_window_s,
                ),
                ("repo-write-day", did, points, config.write_points_per_day, config.day_window_s),
                self._ip_limit(call),
            ]
        return [self._ip_limit(call)]

    def _write_points(self, request):
        config = self.config
        if request.nsid == "com.atproto.repo.createRecord":
            return config.create_points
        if request.nsid == "com.atproto.repo.deleteRecord":
            return config.delete_points
        cost = {CREATE: config.create_points, UPDATE: config.update_points}
        return sum(cost.get(w["$type"], config.delete_points) for w in request.body["writes"])

    def _spend(self, call, specs):
        if not self.config.rate_limits_enabled:
            return
        statuses = [
            self.windows.spend(name, key, points, limit, window_s, call.now)
            for name, key, points, limit, window_s in specs
            if points >= 1
        ]
        if not statuses:
            return
        status = limits.combine(statuses)
        call.headers.update(status.headers(call.now))
        if not status.ok:
            call.refusal = {
                "limiter": status.name,
                "at": round(call.now, 3),
                "points": next(spec[2] for spec in specs if spec[0] == status.name),
                "spent": status.spent,
                "reset_at": round(status.reset_at, 3),
            }
            if status.name == "global-ip":
                self.ip_rate_limited += 1
            raise XrpcError(*RATE_LIMITED)

    # -- sessions ----------------------------------------------------------------
    def create_session(self, call):
        body = call.request.body
        identifier = str(body["identifier"]).lower()
        account = self.accounts.get(identifier) or self.by_did.get(identifier)
        password = str(body["password"])
        call.signing_in = True
        if (
            account is None
            or account.password_revoked
            or account.status == "takendown"  # taken down: no sign-in with an app password
            or not secrets.compare_digest(password.encode(), account.password.encode())
        ):
            raise XrpcError(*BAD_LOGIN)
        account.logins += 1
        return self._session_body(account, *self._issue(account, call.now))

    def refresh_session(self, call):
        account = call.account
        if account.status == "takendown":
            raise XrpcError(401, "AccountTakedown", "Account has been taken down")
        entry = self.refresh_tokens.get(call.refresh_jti)
        now = call.now
        if entry is not None and entry[1] <= now:
            del self.refresh_tokens[call.refresh_jti]
            entry = None
        if entry is None:
            raise XrpcError.invalid("Token has been revoked", "ExpiredToken")
        # account-manager.ts rotateRefreshToken: tidy the account's expired tokens; the used
        # token keeps working for a grace period and always leads to the same next token,
        # so concurrent refreshes agree.
        held = self.refresh_by_did.get(account.did, set())
        for jti in [j for j in held if self.refresh_tokens.get(j, (0, 0))[1] <= now]:
            held.discard(jti)
            self.refresh_tokens.pop(jti, None)
        entry[1] = min(entry[1], now + self.config.refresh_grace_s)
        entry[2] = entry[2] or secrets.token_urlsafe(24)
        account.refreshes += 1
        return self._session_body(account, *self._issue(account, now, jti=entry[2]))

    def get_session(self, call):
        account = call.account
        body = {
            "handle": account.handle,
            "did": account.did,
            "didDoc": self.did_doc(account),
            "active": account.status is None,
        }
        if account.status:
            body["status"] = account.status
        return body

    def resolve_handle(self, call):
        handle = call.required("handle").lower()
        found = None if handle.startswith("did:") else self.appview.actor(handle)
        if found is None:
            raise XrpcError.invalid("Unable to resolve handle")
        return {"did": found[0]}

    # -- the repository ------------------------------------------------------------
    def _own_repo(self, call):
        """The account named by "repo", which must be the signed-in one (findAccount)."""
        repo = str(call.request.body["repo"]).lower()
        account = self.accounts.get(repo) or self.by_did.get(repo)
        if account is None:
            raise XrpcError(403, "AccountNotFound", "Account not found")
        if account.status:
            raise XrpcError(*STATUS_ERRORS[account.status])
        if account is not call.account:
            raise XrpcError(*AUTH_REQUIRED)
        return account

    def _commit(self, account, writes, now):
        added, removed = account.repo.commit(writes)
        for rkey, record in removed:
            self.appview.index_later(now, account, "block-", record.subject, rkey)
        for rkey, record in added:
            self.appview.index_later(now, account, "block+", record.subject, rkey)
        rev = self.tids.next()
        return {"cid": cid_for(f"{account.did}/commit/{rev}".encode()), "rev": rev}

    def _uri(self, account, rkey):
        return f"at://{account.did}/{BLOCK}/{rkey}"

    def create_record(self, call):
        account = self._own_repo(call)
        body = call.request.body
        self.oauth.check_scope(call, "repo", str(body["collection"]), "create")
        write = prepare(CREATE, body, self.tids, validate=body.get("validate"))
        writes = [write]
        if write.validated:
            # createRecord.ts getBacklinkConflicts: other blocks of this subject go.
            writes = [
                *(
                    replace(write, action=DELETE, record=None, rkey=rkey)
                    for rkey in account.repo.conflicts(write.record.subject)
                ),
                write,
            ]
        commit = self._commit(account, writes, call.now)
        answer = {"uri": self._uri(account, write.rkey), "cid": write.record.cid, "commit": commit}
        if write.validated:
            answer["validationStatus"] = "valid"
        return answer

    def delete_record(self, call):
        account = self._own_repo(call)
        body = call.request.body
        self.oauth.check_scope(call, "repo", str(body["collection"]), "delete")
        rkey = body["rkey"]
        if not is_record_key(rkey):
            raise XrpcError.invalid("Input/rkey must be a valid Record Key")
        if body["collection"] != BLOCK or rkey not in account.repo.records:
            return {}  # deleteRecord.ts: "No-op if record already doesn't exist"
        write = prepare(DELETE, body, self.tids)
        return {"commit": self._commit(account, [write], call.now)}

    def apply_writes(self, call):
        account = self._own_repo(call)
        body = call.request.body
        writes = body["writes"]
        if len(writes) > self.config.max_writes_per_call:
            raise XrpcError.invalid(f"Too many writes. Max: {self.config.max_writes_per_call}")
        # applyWrites.ts: every distinct (action, collection), creates, then updates, deletes.
        for kind, action in ((CREATE, "create"), (UPDATE, "update"), (DELETE, "delete")):
            collections = [str(w.get("collection")) for w in writes if w["$type"] == kind]
            for collection in dict.fromkeys(collections):
                self.oauth.check_scope(call, "repo", collection, action)
        validate = body.get("validate")
        prepared = [
            prepare(write["$type"], write, self.tids, validate=validate, index=index)
            for index, write in enumerate(writes)
        ]
        commit = self._commit(account, prepared, call.now)
        results = []
        for write in prepared:
            result = {"$type": RESULT_TYPES[write.action]}
            if write.action != DELETE:
                result.update(uri=self._uri(account, write.rkey), cid=write.record.cid)
                if write.validated:
                    result["validationStatus"] = "valid"
            results.append(result)
        return {"commit": commit, "results": results}

    def _repo_param(self, call):
        repo = call.required("repo").lower()
        return self.accounts.get(repo) or self.by_did.get(repo)

    def get_record(self, call):
        account = self._repo_param(call)
        collection, rkey = call.required("collection"), call.required("rkey")
        if account is None:
            raise XrpcError.invalid("Could not locate record")
        record = account.repo.records.get(rkey) if collection == BLOCK else None
        uri = f"at://{account.did}/{collection}/{rkey}"
        if record is None:
            raise XrpcError.invalid(f"Could not locate record: {uri}", "RecordNotFound")
        return {"uri": uri, "cid": record.cid, "value": record.value()}

    def list_records(self, call):
        account = self._repo_param(call)
        collection = call.required("collection")
        limit = call.int_param("limit", 50, 1, 100)
        if account is None:
            raise XrpcError.invalid(f"Could not find repo: {call.param('repo')}")
        if collection != BLOCK:
            return {"records": []}
        reverse = call.param("reverse", "false").lower() == "true"
        rkeys, cursor = account.repo.page(limit, call.param("cursor"), reverse)
        records = account.repo.records
        body = {
            "records": [
                {"uri": self._uri(account, k), "cid": records[k].cid, "value": records[k].value()}
                for k in rkeys
            ]
        }
        if cursor:
            body["cursor"] = cursor
        return body

    # -- the AppView ---------------------------------------------------------------
    def get_profile(self, call):
        return self.appview.profile(call.account, call.required("actor"))

    def get_profiles(self, call):
        actors = call.request.params.get("actors") or []
        if not actors:
            raise XrpcError.invalid('Error: Params must have the property "actors"')
        if len(actors) > 25:
            raise XrpcError.invalid("Error: actors must not have more than 25 elements")
        return self.appview.profiles(call.account, actors)

    def get_followers(self, call):
        actor = call.required("actor")
        limit = call.int_param("limit", 50, 1, 100)
        return self.appview.followers(call.account, actor, limit, call.param("cursor"))

    def get_blocks(self, call):
        limit = call.int_param("limit", 50, 1, 100)
        return self.appview.blocks(call.account, limit, call.param("cursor"))

    def get_posts(self, call):
        uris = call.request.params.get("uris") or []
        if not uris:
            raise XrpcError.invalid('Error: Params must have the property "uris"')
        if len(uris) > 25:
            raise XrpcError.invalid("Error: uris must not have more than 25 elements")
        return self.feed.posts(call.account, uris)

    def _engagement(self, call, kind):
        uri = call.required("uri")
        limit = call.int_param("limit", 50, 1, 100)
        cid, cursor = call.param("cid"), call.param("cursor")
        return self.feed.engagement(call.account, kind, uri, cid, limit, cursor)

    def get_likes(self, call):
        return self._engagement(call, posts.LIKE)

    def get_reposted_by(self, call):
        return self._engagement(call, posts.REPOST)

    def get_quotes(self, call):
        return self._engagement(call, posts.QUOTE)

    def get_post_thread(self, call):
        uri = call.required("uri")
        depth = call.int_param("depth", 6, 0, 1000)
        height = call.int_param("parentHeight", 80, 0, 1000)
        return self.feed.thread(call.account, uri, depth, height)

    def mute_actor(self, call):
        self.appview.mute(call.now, call.account, str(call.request.body["actor"]), True)

    def unmute_actor(self, call):
        self.appview.mute(call.now, call.account, str(call.request.body["actor"]), False)


def _error(error, message):
    return {"error": error, "message": message}
