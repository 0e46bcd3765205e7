"""The provider interface: what the app needs from a social network.

One implementation exists, Bluesky over XRPC (bluesky.client.BlueskyClient).
Everything takes and returns plain data (DIDs, dicts), so tasks stay JSON-only.
"""

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Profile:
    did: str
    handle: str
    followers_count: int = 0
    # The signed-in account's relation to this one, as the network reports it.
    blocking_uri: str | None = None
    following: bool = False
    muted: bool = False
    blocked_by: bool = False


@dataclass(frozen=True)
class FollowerPage:
    followers: list[Profile]
    cursor: str | None


@dataclass(frozen=True)
class Post:
    """A post as the AppView counts it (app.bsky.feed.defs#postView)."""

    uri: str
    author: Profile
    like_count: int = 0
    repost_count: int = 0
    quote_count: int = 0
    # Direct replies only (the AppView's count); replies to replies are in the thread.
    reply_count: int = 0


@dataclass
class Session:
    """What a signed-in session needs, and what the app stores (encrypted)."""

    did: str
    handle: str
    access_jwt: str
    refresh_jwt: str
    # The account's own PDS, from the session's DID document (#atproto_pds).
    pds_url: str | None = None
    changed: bool = field(default=False, compare=False)


class Provider(Protocol):
    def resolve(self, handle_or_did: str) -> Profile: ...

    def profiles(self, actors: list[str]) -> list[Profile]: ...

    def followers_page(
        self, actor: str, cursor: str | None = None, limit: int = 100
    ) -> FollowerPage: ...

    def post(self, uri: str) -> Post: ...

    def engagers_page(
        self, group: str, uri: str, cursor: str | None = None, limit: int = 100
    ) -> FollowerPage: ...

    def block_many(self, dids: list[str]) -> dict[str, str]:
        """Block each DID; return DID -> record key of the new block record."""
        ...

    def unblock_many(self, rkeys: list[str]) -> None: ...

    def mute(self, did: str) -> None: ...

    def unmute(self, did: str) -> None: ...

    def my_blocks(self, cursor: str | None = None) -> FollowerPage: ...
