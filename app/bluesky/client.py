"""A thin Bluesky client over XRPC/HTTPS (httpx), implementing provider.Provider.

Kept deliberately small: the full atproto SDK costs ~60 MB RSS per process,
which a 2 GiB host cannot pay for every worker.
"""

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from .errors import BadRequest, CredentialsRevoked, NotFound, ProviderError, RateLimited
from .provider import FollowerPage, Profile, Session

log = logging.getLogger(__name__)

BLOCK_COLLECTION = "app.bsky.graph.block"
MAX_WRITES_PER_CALL = 200
MAX_PROFILES_PER_CALL = 25
_TOKEN_ERRORS = {"ExpiredToken", "InvalidToken"}


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
    )


class RateLimitState:
    """The last rate-limit headers the network sent (limit, remaining, reset)."""

    def __init__(self):
        self.limit = None
        self.remaining = None
        self.reset_at = None

    def update(self, headers: httpx.Headers) -> None:
        try:
            if "ratelimit-remaining" in headers:
                self.limit = int(headers.get("ratelimit-limit", "0"))
                self.remaining = int(headers["ratelimit-remaining"])
                self.reset_at = int(headers.get("ratelimit-reset", "0")) or None
        except ValueError:
            log.warning("unparseable rate-limit headers: %s", dict(headers))


class BlueskyClient:
    def __init__(
        self,
        service_url: str,
        identifier: str,
        app_password: str,
        session: Session | None = None,
        on_session: Callable[[Session], None] | None = None,
        timeout: float = 20.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.identifier = identifier
        self._app_password = app_password
        self.session = session
        self._on_session = on_session
        self.rate_limit = RateLimitState()
        self._http = httpx.Client(
            base_url=service_url.rstrip("/") + "/xrpc/",
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": "shoestring/1"},
        )

    def close(self):
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- sessions ---------------------------------------------------------
    def login(self) -> Session:
        response = self._send(
            "POST",
            "com.atproto.server.createSession",
            json={"identifier": self.identifier, "password": self._app_password},
        )
        if response.status_code == 401:
            raise CredentialsRevoked(self._error_text(response))
        self._raise_for(response)
        return self._store_session(response.json())

    def _refresh(self) -> Session:
        response = self._send(
            "POST",
            "com.atproto.server.refreshSession",
            headers={"Authorization": f"Bearer {self.session.refresh_jwt}"},
        )
        if response.status_code in (400, 401):
            # The refresh token is gone too: sign in again with the app password,
            # which raises CredentialsRevoked when that was revoked as well.
            return self.login()
        self._raise_for(response)
        return self._store_session(response.json())

    def _store_session(self, data: dict) -> Session:
        self.session = Session(
            did=data["did"],
            handle=data.get("handle", ""),
            access_jwt=data["accessJwt"],
            refresh_jwt=data["refreshJwt"],
            changed=True,
        )
        if self._on_session:
            self._on_session(self.session)
        return self.session

    # -- transport --------------------------------------------------------
    def _send(self, method, nsid, **kwargs) -> httpx.Response:
        try:
            response = self._http.request(method, nsid, **kwargs)
        except httpx.HTTPError as error:
            raise ProviderError(f"{nsid}: {error.__class__.__name__}: {error}") from error
        self.rate_limit.update(response.headers)
        if response.status_code == 429:
            raise RateLimited(f"{nsid}: rate limited", reset_at=self.rate_limit.reset_at)
        return response

    @staticmethod
    def _error_code(response) -> str:
        try:
            return response.json().get("error", "")
        except ValueError:
            return ""

    @staticmethod
    def _error_text(response) -> str:
        try:
            body = response.json()
            return f"{body.get('error', response.status_code)}: {body.get('message', '')}"
        except ValueError:
            return f"HTTP {response.status_code}"

    def _raise_for(self, response, nsid=""):
        if response.status_code < 400:
            return
        text = f"{nsid} {self._error_text(response)}".strip()
        if response.status_code >= 500:
            raise ProviderError(text)
        if response.status_code == 401:
            raise CredentialsRevoked(text)
        if "not found" in text.lower() or self._error_code(response) in (
            "NotFound",
            "AccountDeactivated",
            "AccountTakedown",
        ):
            raise NotFound(text)
        raise BadRequest(text)

    def _call(self, method, nsid, **kwargs) -> dict:
        if self.session is None:
            self.login()
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self.session.access_jwt}"}
            response = self._send(method, nsid, headers=headers, **kwargs)
            expired = response.status_code in (400, 401) and (
                self._error_code(response) in _TOKEN_ERRORS
            )
            if expired and attempt == 1:
                self._refresh()
                continue
            self._raise_for(response, nsid)
            return response.json() if response.content else {}
        raise CredentialsRevoked(f"{nsid}: the session was refused after a refresh")

    # -- the provider interface ------------------------------------------
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

    def block_many(self, dids: list[str]) -> dict[str, str]:
        created = {}
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        for start in range(0, len(dids), MAX_WRITES_PER_CALL):
            chunk = dids[start : start + MAX_WRITES_PER_CALL]
            writes = [
                {
                    "$type": "com.atproto.repo.applyWrites#create",
                    "collection": BLOCK_COLLECTION,
                    "value": {"$type": BLOCK_COLLECTION, "subject": did, "createdAt": now},
                }
                for did in chunk
            ]
            data = self._call(
                "POST",
                "com.atproto.repo.applyWrites",
                json={"repo": self.session_did(), "writes": writes},
            )
            for did, result in zip(chunk, data.get("results", []), strict=False):
                created[did] = rkey_from_uri(result["uri"])
        return created

    def unblock_many(self, rkeys: list[str]) -> None:
        for start in range(0, len(rkeys), MAX_WRITES_PER_CALL):
            writes = [
                {
                    "$type": "com.atproto.repo.applyWrites#delete",
                    "collection": BLOCK_COLLECTION,
                    "rkey": rkey,
                }
                for rkey in rkeys[start : start + MAX_WRITES_PER_CALL]
            ]
            self._call(
                "POST",
                "com.atproto.repo.applyWrites",
                json={"repo": self.session_did(), "writes": writes},
            )

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
        if self.session is None:
            self.login()
        return self.session.did
