"""A thin Bluesky client over XRPC/HTTPS (httpx), implementing provider.Provider.

Kept deliberately small: the full atproto SDK costs ~60 MB RSS per process,
which a 2 GiB host cannot pay for every worker.

Sessions work as with the reference PDS (bluesky-social/atproto, docs/fakesky.md): sign in
once (createSession), keep the tokens, and talk to the account's own PDS, which the
session's DID document names (#atproto_pds). That address comes from the person's DID
document, so the client sends tokens and passwords only to public https servers
(allow_loopback_pds lets a test or demo network on this machine's loopback through, and
allow_pds_networks one on a private test network of several hosts).
"""

import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from .errors import (
    AccountSuspended,
    BadRequest,
    CredentialsRevoked,
    NotFound,
    ProviderError,
    RateLimited,
    RkeyTaken,
    ServerError,
    UnsafePds,
)
from .oauth import DpopAuth, GrantRevoked, HttpClient, nonce_challenge, remember_nonce
from .provider import FollowerPage, Post, Profile, Session
from .tids import is_tid, tid_before
from .tls import tls_context

log = logging.getLogger(__name__)

BLOCK_COLLECTION = "app.bsky.graph.block"
LIST_RECORDS = "com.atproto.repo.listRecords"
LIST_LIMIT = 100
MAX_WRITES_PER_CALL = 200
MAX_PROFILES_PER_CALL = 25
CREATE_SESSION = "com.atproto.server.createSession"
REFRESH_SESSION = "com.atproto.server.refreshSession"
APPLY_WRITES = "com.atproto.repo.applyWrites"
DELETE_RECORD = "com.atproto.repo.deleteRecord"
WRITES = {APPLY_WRITES, "com.atproto.repo.createRecord", DELETE_RECORD}
# Bluesky's per-address budget (the reference PDS's "global-ip" limit) until an answer to a
# read, which only that budget covers, shows the one in force.
DEFAULT_ADDRESS_POLICY = "3000;w=300"
_TOKEN_ERRORS = {"ExpiredToken", "InvalidToken"}
_ACCOUNT_STATUS_ERRORS = {"AccountTakedown", "AccountDeactivated"}
# A PDS host checked recently is not resolved again for every task.
_CHECKED_HOSTS = {}
_CHECK_TTL_S = 300


def normalize_handle(value: str) -> str:
    value = value.strip()
    if value.startswith("@"):
        value = value[1:]
    return value if value.startswith("did:") else value.lower()


def rkey_from_uri(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


def _profile(data: dict) -> Profile:
    viewer = data.get("viewer") or {}
    return Profile(
        did=data["did"],
        handle=data.get("handle", ""),
        followers_count=int(data.get("followersCount") or 0),
        blocking_uri=viewer.get("blocking"),
        following=bool(viewer.get("following")),
        muted=bool(viewer.get("muted")),
        blocked_by=bool(viewer.get("blockedBy")),
    )


def _post(data: dict) -> Post:
    return Post(
        uri=data["uri"],
        author=_profile(data["author"]),
        like_count=int(data.get("likeCount") or 0),
        repost_count=int(data.get("repostCount") or 0),
        quote_count=int(data.get("quoteCount") or 0),
        reply_count=int(data.get("replyCount") or 0),
    )


def _reply_authors(thread: dict, found: list) -> list:
    """The author of every post under a thread view, depth first, in the AppView's order.
    Blocked and missing replies (#blockedPost, #notFoundPost) have no author to take."""
    for reply in thread.get("replies") or []:
        if "post" in reply:
            found.append(_profile(reply["post"]["author"]))
            _reply_authors(reply, found)
    return found


# Who engaged with a post: the AppView method that lists each group, the key of its list,
# and how to find the account in one entry of it.
_ENGAGERS = {
    "likes": ("app.bsky.feed.getLikes", "likes", lambda item: item["actor"]),
    "reposts": ("app.bsky.feed.getRepostedBy", "repostedBy", lambda item: item),
    "quotes": ("app.bsky.feed.getQuotes", "posts", lambda item: item["author"]),
}
# getPostThread has no pagination; this deep a thread is read in one call.
THREAD_DEPTH = 100


def pds_from_did_doc(did_doc) -> str | None:
    """The #atproto_pds service endpoint of a DID document, or None."""
    if not isinstance(did_doc, dict):
        return None
    did = did_doc.get("id", "")
    for service in did_doc.get("service") or []:
        if (
            isinstance(service, dict)
            and service.get("id") in ("#atproto_pds", f"{did}#atproto_pds")
            and service.get("type") == "AtprotoPersonalDataServer"
            and isinstance(service.get("serviceEndpoint"), str)
        ):
            return service["serviceEndpoint"]
    return None


def check_pds_url(url: str, allow_loopback: bool = False, allow_networks=()) -> str:
    """The URL, without a trailing slash, if tokens may go there; raises UnsafePds otherwise.

    Only https to public addresses; with allow_loopback, also http or https to loopback, and
    to addresses inside allow_networks (ip_network objects: a test network's).
    Raises ProviderError when the name does not resolve (worth trying again later).
    """
    parts = urlsplit(url)
    host = parts.hostname
    if not host or parts.scheme not in ("http", "https") or parts.username or parts.password:
        raise UnsafePds(f"{url}: not an http(s) URL")
    checked = _CHECKED_HOSTS.get(host)
    if checked is None or checked[0] < time.monotonic() - _CHECK_TTL_S:
        checked = (time.monotonic(), _addresses(host))
        _CHECKED_HOSTS[host] = checked
    addresses = checked[1]
    if all(
        (allow_loopback and address.is_loopback)
        or any(address in network for network in allow_networks)
        for address in addresses
    ):
        return url.rstrip("/")
    if parts.scheme != "https":
        raise UnsafePds(f"{url}: not https")
    if not all(address.is_global for address in addresses):
        raise UnsafePds(f"{url}: {host} is a private, loopback or reserved address")
    return url.rstrip("/")


def _addresses(host):
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as error:
        raise ProviderError(f"cannot resolve {host}: {error}") from error
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


class RateLimitState:
    """The rate-limit headers of the last answer; every answer replaces them, so a 429 that
    names no reset time never reuses an older one."""

    def __init__(self):
        self.limit = self.remaining = self.reset_at = self.policy = None
        self.address_policy = DEFAULT_ADDRESS_POLICY

    def update(self, nsid: str, headers: httpx.Headers) -> None:
        self.limit = self.remaining = self.reset_at = self.policy = None
        if "ratelimit-remaining" not in headers:
            return
        try:
            self.remaining = int(headers["ratelimit-remaining"])
            self.limit = int(headers.get("ratelimit-limit") or 0) or None
            self.reset_at = int(headers.get("ratelimit-reset") or 0) or None
        except ValueError:
            log.warning("unparseable rate-limit headers: %s", dict(headers))
            self.limit = self.remaining = self.reset_at = None
            return
        self.policy = headers.get("ratelimit-policy")
        if self.policy and nsid not in WRITES and nsid != CREATE_SESSION:
            self.address_policy = self.policy

    def scope(self, nsid: str) -> str:
        """Whose budget the last 429 spent: "account" or "address" (see RateLimited)."""
        own_budget = nsid in WRITES or nsid == CREATE_SESSION
        if own_budget and self.policy and self.policy != self.address_policy:
            return "account"
        return "address"


class BlueskyClient(HttpClient):
    def __init__(
        self,
        service_url: str,
        identifier: str,
        app_password: str,
        session: Session | None = None,
        on_session: Callable[[Session], None] | None = None,
        timeout: float = 20.0,
        transport: httpx.BaseTransport | None = None,
        allow_loopback_pds: bool = False,
        allow_pds_networks=(),
        before_request: Callable[[str], None] | None = None,
        oauth: DpopAuth | None = None,
    ):
        self.service_url = service_url.rstrip("/")
        self.identifier = identifier
        self._app_password = app_password
        self.session = session
        self._on_session = on_session
        self._allow_loopback_pds = allow_loopback_pds
        self._allow_pds_networks = allow_pds_networks
        # Called with the NSID before every request: where a shared budget is taken.
        self._before_request = before_request
        self._pds_checked = None
        # Signed in with Bluesky (OAuth): DPoP-bound tokens instead of a session.
        self.oauth = oauth
        self.rate_limit = RateLimitState()
        self._http = httpx.Client(
            timeout=timeout,
            transport=transport,
            verify=tls_context(),
            headers={"User-Agent": "shoestring/1"},
        )

    # -- sessions ---------------------------------------------------------
    @property
    def pds_url(self) -> str:
        """Where calls go: the session's PDS, or service_url before a session; checked."""
        if self.oauth:
            url = self.oauth.grant.pds_url
        else:
            url = (self.session and self.session.pds_url) or self.service_url
        if url != self._pds_checked:
            check_pds_url(url, self._allow_loopback_pds, self._allow_pds_networks)
            self._pds_checked = url
        return url.rstrip("/")

    def login(self) -> Session:
        """Sign in with the app password: at the account's PDS once it is known (it serves
        createSession for its accounts, as the official SDK relies on), else at service_url.
        An OAuth grant cannot sign in again without its person: GrantRevoked."""
        if self.oauth:
            raise GrantRevoked("the grant's tokens were refused")
        response = self._send(
            "POST",
            self.pds_url,
            CREATE_SESSION,
            json={"identifier": self.identifier, "password": self._app_password},
        )
        if response.status_code == 401:
            self._raise_account_status(response)
            raise CredentialsRevoked(self._error_text(response))
        self._raise_for(response, CREATE_SESSION)
        return self._store_session(response.json())

    def _refresh(self) -> str:
        """Renew the session: "refresh" when the refresh token worked, "login" when it was
        refused and the app password signed in again (CredentialsRevoked when that fails)."""
        response = self._send(
            "POST",
            self.pds_url,
            REFRESH_SESSION,
            headers={"Authorization": f"Bearer {self.session.refresh_jwt}"},
        )
        self._raise_account_status(response)
        if response.status_code in (400, 401):
            self.login()
            return "login"
        self._raise_for(response, REFRESH_SESSION)
        self._store_session(response.json())
        return "refresh"

    def _store_session(self, data: dict) -> Session:
        pds = pds_from_did_doc(data.get("didDoc"))
        pds = (
            check_pds_url(pds, self._allow_loopback_pds, self._allow_pds_networks)
            if pds
            else self.service_url
        )
        self.session = Session(
            did=data["did"],
            handle=data.get("handle", ""),
            access_jwt=data["accessJwt"],
            refresh_jwt=data["refreshJwt"],
            pds_url=pds,
            changed=True,
        )
        if self._on_session:
            self._on_session(self.session)
        return self.session

    # -- transport --------------------------------------------------------
    def _send(self, method, base, nsid, **kwargs) -> httpx.Response:
        if self._before_request:
            self._before_request(nsid)
        try:
            response = self._http.request(method, f"{base}/xrpc/{nsid}", **kwargs)
        except httpx.HTTPError as error:
            raise ProviderError(f"{nsid}: {error.__class__.__name__}: {error}") from error
        self.rate_limit.update(nsid, response.headers)
        if response.status_code == 429:
            raise RateLimited(
                f"{nsid}: rate limited ({self.rate_limit.policy or 'no policy given'})",
                reset_at=self.rate_limit.reset_at,
                scope=self.rate_limit.scope(nsid),
                limit=self.rate_limit.limit,
            )
        return response

    @staticmethod
    def _error_code(response) -> str:
        try:
            return response.json().get("error", "")
        except (ValueError, AttributeError):
            return ""

    @staticmethod
    def _error_text(response) -> str:
        try:
            body = response.json()
            return f"{body.get('error', response.status_code)}: {body.get('message', '')}"
        except (ValueError, AttributeError):
            return f"HTTP {response.status_code}"

    def _raise_account_status(self, response):
        if response.status_code == 401 and self._error_code(response) in _ACCOUNT_STATUS_ERRORS:
            raise AccountSuspended(self._error_text(response))

    def _raise_for(self, response, nsid=""):
        if response.status_code < 400:
            return
        text = f"{nsid} {self._error_text(response)}".strip()
        if response.status_code >= 500:
            raise ServerError(text, response.status_code)
        if response.status_code == 401:
            raise CredentialsRevoked(text)
        if "not found" in text.lower() or self._error_code(response) in (
            "NotFound",
            *_ACCOUNT_STATUS_ERRORS,
        ):
            raise NotFound(text)
        raise BadRequest(text)

    def _call(self, method, nsid, **kwargs) -> dict:
        if self.oauth:
            return self._call_dpop(method, nsid, **kwargs)
        return self._call_session(method, nsid, **kwargs)

    def _call_dpop(self, method, nsid, **kwargs) -> dict:
        """One call with the OAuth grant: once more with the PDS's new DPoP nonce when it asks
        for one, and once more after a refresh when the token is refused (expired, revoked)."""
        url = f"{self.pds_url}/xrpc/{nsid}"
        renewed = nonce_retried = False
        while True:
            headers = self.oauth.headers(method, url)
            response = self._send(method, self.pds_url, nsid, headers=headers, **kwargs)
            remember_nonce(url, response)
            self._raise_account_status(response)
            if response.status_code == 401 and nonce_challenge(response) and not nonce_retried:
                nonce_retried = True
                continue
            if response.status_code == 401 and not renewed:
                renewed = True
                self.oauth.renew()
                continue
            if response.status_code == 401:
                raise GrantRevoked(f"{nsid}: {self._error_text(response)} after a refresh")
            self._raise_for(response, nsid)
            return response.json() if response.content else {}

    def _call_session(self, method, nsid, **kwargs) -> dict:
        """One authenticated call. A refused token (400 ExpiredToken/InvalidToken, or 401)
        refreshes the session, then signs in once, before the credentials count as revoked."""
        if self.session is None:
            self.login()
        renewed = set()
        while True:
            headers = {"Authorization": f"Bearer {self.session.access_jwt}"}
            response = self._send(method, self.pds_url, nsid, headers=headers, **kwargs)
            self._raise_account_status(response)
            refused = response.status_code == 401 or (
                response.status_code == 400 and self._error_code(response) in _TOKEN_ERRORS
            )
            if not refused:
                self._raise_for(response, nsid)
                return response.json() if response.content else {}
            if "refresh" not in renewed:
                renewed.update({"refresh", self._refresh()})
            elif "login" not in renewed:
                self.login()
                renewed.add("login")
            else:
                raise CredentialsRevoked(f"{nsid}: {self._error_text(response)} after signing in")

    # -- the provider interface ------------------------------------------
    def resolve_handle(self, handle: str) -> str:
        """A handle's DID, from service_url without a session (the entryway resolves any
        handle); NotFound if it resolves to none."""
        nsid = "com.atproto.identity.resolveHandle"
        params = {"handle": normalize_handle(handle)}
        response = self._send("GET", self.service_url, nsid, params=params)
        if response.status_code == 400:
            raise NotFound(f"{nsid}: {self._error_text(response)}")
        self._raise_for(response, nsid)
        return response.json()["did"]

    def resolve(self, handle_or_did: str) -> Profile:
        actor = normalize_handle(handle_or_did)
        return _profile(self._call("GET", "app.bsky.actor.getProfile", params={"actor": actor}))

    def profiles(self, actors: list[str]) -> list[Profile]:
        found = []
        for start in range(0, len(actors), MAX_PROFILES_PER_CALL):
            chunk = actors[start : start + MAX_PROFILES_PER_CALL]
            data = self._call("GET", "app.bsky.actor.getProfiles", params={"actors": chunk})
            found.extend(_profile(item) for item in data.get("profiles", []))
        return found

    def followers_page(self, actor: str, cursor: str | None = None, limit: int = 100):
        params = {"actor": actor, "limit": min(max(limit, 1), 100)}
        if cursor:
            params["cursor"] = cursor
        data = self._call("GET", "app.bsky.graph.getFollowers", params=params)
        return FollowerPage(
            followers=[_profile(item) for item in data.get("followers", [])],
            cursor=data.get("cursor"),
        )

    def post(self, uri: str) -> Post:
        """The post at this at:// URI, with its counts; NotFound if the AppView has none."""
        data = self._call("GET", "app.bsky.feed.getPosts", params={"uris": [uri]})
        posts = data.get("posts") or []
        if not posts:
            raise NotFound(f"app.bsky.feed.getPosts: Post not found: {uri}")
        return _post(posts[0])

    def engagers_page(self, group: str, uri: str, cursor: str | None = None, limit: int = 100):
        """One page of the accounts that liked, reposted or quoted a post; for "replies",
        every author in its thread at once (getPostThread has no cursor)."""
        if group == "replies":
            params = {"uri": uri, "depth": THREAD_DEPTH, "parentHeight": 0}
            data = self._call("GET", "app.bsky.feed.getPostThread", params=params)
            return FollowerPage(followers=_reply_authors(data["thread"], []), cursor=None)
        nsid, key, actor = _ENGAGERS[group]
        params = {"uri": uri, "limit": min(max(limit, 1), 100)}
        if cursor:
            params["cursor"] = cursor
        data = self._call("GET", nsid, params=params)
        return FollowerPage(
            followers=[_profile(actor(item)) for item in data.get(key, [])],
            cursor=data.get("cursor"),
        )

    def block_many(self, dids: list[str], rkeys: list[str] | None = None) -> dict[str, str]:
        """Create a block record of each DID; return DID -> record key.

        With rkeys (TIDs made before the first attempt, one per DID), each record gets its
        key, so writing a batch again after a lost answer cannot make a second block: the PDS
        refuses a create on an existing key (applyWrites fails whole with a 500), and then
        the keys are looked up on the PDS (block_subjects), never on the eventually consistent
        AppView, and only the missing ones are created.
        """
        created = {}
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        keys = list(rkeys) if rkeys is not None else [None] * len(dids)
        for start in range(0, len(dids), MAX_WRITES_PER_CALL):
            chunk = list(zip(dids[start : start + MAX_WRITES_PER_CALL], keys[start:], strict=False))
            try:
                created.update(self._create_blocks(chunk, now))
            except ServerError as error:
                if error.status != 500 or rkeys is None:
                    raise
                missing = []
                subjects = self.block_subjects([rkey for _, rkey in chunk])
                for did, rkey in chunk:
                    subject = subjects.get(rkey)
                    if subject == did:
                        created[did] = rkey
                    elif subject is None:
                        missing.append((did, rkey))
                    else:
                        raise RkeyTaken(rkey) from error
                if len(missing) == len(chunk):
                    raise  # nothing was there: the PDS failed for another reason
                log.info(
                    "block: %d of %d records were written before",
                    len(chunk) - len(missing),
                    len(chunk),
                )
                if missing:
                    created.update(self._create_blocks(missing, now))
        return created

    def _create_blocks(self, chunk, now):
        writes = []
        for did, rkey in chunk:
            write = {
                "$type": "com.atproto.repo.applyWrites#create",
                "collection": BLOCK_COLLECTION,
                "value": {"$type": BLOCK_COLLECTION, "subject": did, "createdAt": now},
            }
            if rkey:
                write["rkey"] = rkey
            writes.append(write)
        data = self._call("POST", APPLY_WRITES, json={"repo": self.session_did(), "writes": writes})
        return {
            did: rkey_from_uri(result["uri"])
            for (did, _), result in zip(chunk, data.get("results", []), strict=False)
        }

    def block_subjects(self, rkeys: list[str], max_calls: int = 0) -> dict[str, str] | None:
        """rkey -> subject of this account's block records among rkeys, from the PDS; None
        if reading their key range would take more than max_calls calls (0: no limit).

        A batch's keys are consecutive TIDs made together, so the records between its first
        and last key are its own (and rarely another): listRecords in ascending order from
        just before the first key reads them in a call or two of 100, where a getRecord per
        key would spend one request of the address's budget on each of up to 200.
        """
        wanted, last = set(rkeys), max(rkeys)
        found, cursor, calls = {}, tid_before(min(rkeys)), 0
        while True:
            if max_calls and calls == max_calls:
                return None
            calls += 1
            data = self._call(
                "GET",
                LIST_RECORDS,
                params={
                    "repo": self.session_did(),
                    "collection": BLOCK_COLLECTION,
                    "limit": LIST_LIMIT,
                    "reverse": "true",
                    "cursor": cursor,
                },
            )
            records = data.get("records") or []
            for record in records:
                rkey = rkey_from_uri(record.get("uri", ""))
                if rkey in wanted:
                    found[rkey] = (record.get("value") or {}).get("subject")
            cursor = data.get("cursor")
            if len(records) < LIST_LIMIT or not cursor or cursor >= last:
                return found  # a short page is the collection's end

    def unblock_many(self, rkeys: list[str]) -> None:
        """Delete these block records, also when some are gone already.

        A person may unblock someone by hand in the Bluesky app, and a retry after a lost
        answer finds every record gone. applyWrites fails whole when one of its deletes finds
        no record (the reference PDS answers 500): then the records still there are read
        (block_subjects, when the keys' range takes a few calls; the keys of a campaign's
        blocks are near each other) and deleted together, or else each record is deleted
        alone: deleteRecord deletes it or makes sure it does not exist.
        """
        for start in range(0, len(rkeys), MAX_WRITES_PER_CALL):
            chunk = rkeys[start : start + MAX_WRITES_PER_CALL]
            if len(chunk) > 1:
                if self._delete_blocks(chunk):
                    continue
                chunk = self._still_held(chunk)
                if len(chunk) > 1 and self._delete_blocks(chunk):
                    continue
            if chunk:
                log.info("unblock: deleting %d records one by one", len(chunk))
            for rkey in chunk:
                self._call(
                    "POST",
                    DELETE_RECORD,
                    json={"repo": self.session_did(), "collection": BLOCK_COLLECTION, "rkey": rkey},
                )

    def _still_held(self, rkeys):
        """Those of these records the PDS still has, if a few calls can tell; else all."""
        if not all(is_tid(rkey) for rkey in rkeys):
            return rkeys
        held = self.block_subjects(rkeys, max_calls=len(rkeys) // LIST_LIMIT + 2)
        return rkeys if held is None else [rkey for rkey in rkeys if rkey in held]

    def _delete_blocks(self, rkeys):
        """One applyWrites deleting these records; False if one of them was not there."""
        writes = [
            {
                "$type": "com.atproto.repo.applyWrites#delete",
                "collection": BLOCK_COLLECTION,
                "rkey": k,
            }
            for k in rkeys
        ]
        try:
            self._call("POST", APPLY_WRITES, json={"repo": self.session_did(), "writes": writes})
        except ServerError as error:
            if error.status != 500:
                raise
            log.info("unblock: %s", error)
            return False
        return True

    def mute(self, did: str) -> None:
        self._call("POST", "app.bsky.graph.muteActor", json={"actor": did})

    def unmute(self, did: str) -> None:
        self._call("POST", "app.bsky.graph.unmuteActor", json={"actor": did})

    def my_blocks(self, cursor: str | None = None) -> FollowerPage:
        params = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        data = self._call("GET", "app.bsky.graph.getBlocks", params=params)
        return FollowerPage(
            followers=[_profile(item) for item in data.get("blocks", [])],
            cursor=data.get("cursor"),
        )

    def session_did(self) -> str:
        if self.oauth:
            return self.oauth.grant.did
        if self.session is None:
            self.login()
        return self.session.did
