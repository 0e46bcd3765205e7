"""Seeded posts and their engagement: likes, reposts, quotes and replies computed, not stored.

``--post troll.fake.test/3lpileon2abcd:2000:500:200:300`` (or ``POST /_fake/posts``) makes the
author's post ``at://<author DID>/app.bsky.feed.post/3lpileon2abcd`` with 2,000 likes, 500
reposts, 200 quotes and 300 replies. Like graph.py's followers, nothing is stored per
engagement: a post keeps its four counts, and engagement i of a kind is computed from i, so a
100,000-like post costs nothing until a page of it is asked for.

Engagers. Liker i of a post has the handle ``l<i>.<rkey>.<author handle>``, reposter i
``r<i>...``, quoter i ``q<i>...``, replier i ``p<i>...``; their DIDs are graph.py's did:plc
encoding of kind KIND_ENGAGER, the post's registration number, the engagement kind, its count
and i, decoded without a table. A pile-on has people who engage twice, so:

- reposter i is liker i when i is a multiple of 5 (and there are more than i likes);
- replier i is liker i when i is a multiple of 10 (and there are more than i likes).

Such an account has only the liker's DID and handle. ``2000:500:200:300`` therefore has
2000 + 400 + 200 + 270 = 2,870 distinct accounts for 3,000 engagements.

Times. The post was created at its rkey's TID time. Engagement i of every kind happened at
``base - i`` milliseconds, base = created + 60 s + the largest count (so all of it follows the
post), and that is both its createdAt and its indexedAt: newest first is i = 0, 1, ...
Like and repost records and quote and reply posts have the rkey of the TID of that time, with
the kind as the TID's clock id, so a quote's or reply's post URI decodes like a DID.

Threads. Reply i answers reply i + 1 when i % 4 is 0 or 1 (and reply i + 1 exists), else the
post itself: replies 2, 3, 6, 7, ... are direct replies, 1 answers 2 and 0 answers 1, so a
thread is three levels deep: depth 1 shows only the direct replies.

Checked against bluesky-social/atproto:
- packages/bsky/src/data-plane/server/indexing/plugins/post.ts (updateAggregates): a post's
  replyCount counts its direct replies only; quoteCount counts the quote posts;
- packages/bsky/src/data-plane/server/routes/likes.ts, reposts.ts, quotes.ts: newest first
  by sortAt (least(createdAt, indexedAt)) then CID, a keyset cursor "<sortAt ms>__<CID of the
  like, repost or quote record>" (db/pagination.ts TimeCidKeyset), a cursor only when more
  follow, a malformed cursor 400 "Malformed cursor";
- lexicons/app/bsky/feed/post.json, lexicons/app/bsky/embed/record.json: the records.
"""

import re
import time
from dataclasses import dataclass
from functools import cached_property

from . import graph, syntax

LIKE, REPOST, QUOTE, REPLY = range(4)
KIND_NAMES = ("likes", "reposts", "quotes", "replies")
_LETTERS = "lrqp"
POST = "app.bsky.feed.post"
COLLECTIONS = ("app.bsky.feed.like", "app.bsky.feed.repost", POST, POST)
REPOSTER_IS_LIKER_EVERY = 5
REPLIER_IS_LIKER_EVERY = 10
ENGAGED_AFTER_MS = 60_000
MAX_COUNT = graph.MAX_FOLLOWERS
SEED_FORMAT = "HANDLE/RKEY:LIKES:REPOSTS:QUOTES:REPLIES"
_ENGAGER_HANDLE = re.compile(r"^(?P<kind>[lrqp])(?P<index>[0-9]{1,9})\.(?P<rkey>[a-z2-7]{13})\.")


def iso(ms):
    """An atproto datetime with milliseconds, as the AppView prints them."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def check_seed(rkey, counts):
    """ValueError naming what is wrong with a post's rkey or counts."""
    if not syntax.is_tid(rkey):
        raise ValueError(f"post rkey must be a TID (13 characters, e.g. 3lpileon2abcd): {rkey!r}")
    for name, count in zip(KIND_NAMES, counts, strict=True):
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
            raise ValueError(f"post {name} must be a whole number 0-{MAX_COUNT}: {count!r}")


def parse_seed(text):
    """(handle, rkey, (likes, reposts, quotes, replies)) of a --post value; ValueError if bad."""
    handle, slash, rest = text.partition("/")
    parts = rest.split(":")
    if not slash or not handle or len(parts) != 5:
        raise ValueError(f"expected {SEED_FORMAT}, got {text!r}")
    try:
        counts = tuple(int(part) for part in parts[1:])
    except ValueError:
        raise ValueError(f"{text!r}: the four counts must be whole numbers") from None
    try:
        check_seed(parts[0], counts)
    except ValueError as error:
        raise ValueError(f"{text!r}: {error}") from None
    return handle, parts[0], counts


def parse_cursor(cursor):
    """(milliseconds, CID) of a keyset cursor; ValueError for a malformed one (pagination.ts
    unpackCursor: exactly two non-empty parts around "__", the first read by parseInt)."""
    parts = cursor.split("__")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValueError(cursor)
    match = re.match(r"^\s*[+-]?[0-9]+", parts[0])
    if match is None:
        raise ValueError(cursor)
    return int(match.group()), parts[1]


@dataclass(frozen=True)
class Post:
    number: int  # registration number, in the engagers' DIDs
    author: str  # DID
    author_handle: str
    rkey: str
    counts: tuple  # likes, reposts, quotes, replies

    @cached_property
    def uri(self):
        return f"at://{self.author}/{POST}/{self.rkey}"

    @cached_property
    def cid(self):
        return syntax.cid_for(self.uri.encode())

    @cached_property
    def created_ms(self):
        return syntax.tid_micros(self.rkey) // 1000

    @cached_property
    def base_ms(self):
        return self.created_ms + ENGAGED_AFTER_MS + max(self.counts)

    def summary(self):
        return {"uri": self.uri, "cid": self.cid, **dict(zip(KIND_NAMES, self.counts, strict=True))}

    # -- who engaged -------------------------------------------------------------
    def owner(self, kind, index):
        """(kind, index) of the account behind engagement ``index`` of ``kind`` (the overlap)."""
        if index < self.counts[LIKE] and (
            (kind == REPOST and index % REPOSTER_IS_LIKER_EVERY == 0)
            or (kind == REPLY and index % REPLIER_IS_LIKER_EVERY == 0)
        ):
            return LIKE, index
        return kind, index

    def account(self, kind, index):
        """(did, handle) of whoever made engagement ``index`` of ``kind``."""
        kind, index = self.owner(kind, index)
        key = self.number << 2 | kind
        did = graph.synthetic_did(graph.KIND_ENGAGER, key, self.counts[kind], index)
        return did, f"{_LETTERS[kind]}{index}.{self.rkey}.{self.author_handle}"

    def distinct_accounts(self):
        likes, reposts, quotes, replies = self.counts
        both_repost = -(-min(reposts, likes) // REPOSTER_IS_LIKER_EVERY)
        both_reply = -(-min(replies, likes) // REPLIER_IS_LIKER_EVERY)
        return likes + reposts - both_repost + quotes + replies - both_reply

    # -- the engagement records ----------------------------------------------------
    def at_ms(self, index):
        return self.base_ms - index

    def record_rkey(self, kind, index):
        return syntax.tid_from_micros(self.at_ms(index) * 1000, clock_id=kind)

    def record_uri(self, kind, index):
        did = self.account(kind, index)[0]
        return f"at://{did}/{COLLECTIONS[kind]}/{self.record_rkey(kind, index)}"

    def record_cid(self, kind, index):
        return syntax.cid_for(self.record_uri(kind, index).encode())

    def cursor_after(self, kind, index):
        """The keyset cursor of a page that ended with engagement ``index``."""
        return f"{self.at_ms(index)}__{self.record_cid(kind, index)}"

    def oldest_ms(self, kind):
        """When the oldest engagement of ``kind`` happened (the newest: base_ms)."""
        return self.base_ms - max(self.counts[kind] - 1, 0)

    def first_after(self, kind, ms, cid):
        """The first index older than a cursor's (ms, cid): (sortAt, cid) < the cursor's."""
        index = self.base_ms - ms
        if index < 0:
            return 0
        if index < self.counts[kind] and self.record_cid(kind, index) < cid:
            return index
        return index + 1

    # -- threads -------------------------------------------------------------------
    def reply_parent(self, index):
        """The reply that reply ``index`` answers, or None for the post itself."""
        if index % 4 in (0, 1) and index + 1 < self.counts[REPLY]:
            return index + 1
        return None

    def reply_children(self, index):
        """Indexes of the replies to reply ``index`` (None: to the post), newest first."""
        count = self.counts[REPLY]
        if index is not None:
            return [index - 1] if index % 4 in (1, 2) and index < count else []
        return self._direct_replies(count)

    @staticmethod
    def _direct_replies(count):
        for block in range(0, count, 4):
            yield from (i for i in (block + 2, block + 3) if i < count)
        if count and (count - 1) % 4 in (0, 1):
            yield count - 1

    def reply_count(self, index=None):
        """Direct replies of the post (index None) or of reply ``index``."""
        if index is not None:
            return len(self.reply_children(index))
        count = self.counts[REPLY]
        last = 1 if count and (count - 1) % 4 in (0, 1) else 0
        return (count + 1) // 4 + count // 4 + last


class Posts:
    """The seeded posts, by number and by (author DID, rkey)."""

    def __init__(self):
        self._posts = []
        self._by_key = {}  # (author DID, rkey) -> Post
        self._by_handle = {}  # (author handle, rkey) -> Post

    def add(self, author, author_handle, rkey, counts):
        counts = tuple(counts)
        check_seed(rkey, counts)
        existing = self._by_key.get((author, rkey))
        if existing is not None:
            if existing.counts != counts:
                raise ValueError(f"{existing.uri} was already seeded with other counts")
            return existing
        longest = f"l{max(counts)}.{rkey}.{author_handle}"
        if not syntax.is_handle(longest):
            raise ValueError(f"engager handles like {longest} would not be valid handles")
        post = Post(len(self._posts), author, author_handle, rkey, counts)
        self._posts.append(post)
        self._by_key[(author, rkey)] = post
        self._by_handle[(author_handle, rkey)] = post
        return post

    def all(self):
        return list(self._posts)

    def engager(self, actor):
        """(did, handle) of an engager named by its DID or handle, or None."""
        if actor.startswith("did:"):
            decoded = graph.decode_did(actor)
            if decoded is None or decoded[0] != graph.KIND_ENGAGER:
                return None
            _, key, count, index = decoded
            number, kind = key >> 2, key & 3
            if number >= len(self._posts):
                return None
            post = self._posts[number]
        else:
            match = _ENGAGER_HANDLE.match(actor.lower())
            if match is None:
                return None
            post = self._by_handle.get((actor.lower()[match.end() :], match["rkey"]))
            if post is None:
                return None
            kind, index, count = _LETTERS.index(match["kind"]), int(match["index"]), None
        if count is not None and count != post.counts[kind]:
            return None
        if index >= post.counts[kind] or post.owner(kind, index) != (kind, index):
            return None  # an overlapping account has only its liker identity
        return post.account(kind, index)

    def resolve(self, uri):
        """(post, kind, index) of an at:// post URI: kind None for a seeded post itself, QUOTE
        or REPLY for an engager's post; None when the fake has no such post."""
        did, collection, rkey = _split(uri)
        if collection != POST or not syntax.is_tid(rkey):
            return None
        post = self._by_key.get((did, rkey))
        if post is not None:
            return post, None, None
        decoded = graph.decode_did(did)
        if decoded is None or decoded[0] != graph.KIND_ENGAGER:
            return None
        number = decoded[1] >> 2
        if number >= len(self._posts):
            return None
        post = self._posts[number]
        index = post.base_ms - syntax.tid_micros(rkey) // 1000
        for kind in (QUOTE, REPLY):
            if (
                0 <= index < post.counts[kind]
                and post.record_rkey(kind, index) == rkey
                and post.account(kind, index)[0] == did
            ):
                return post, kind, index
        return None


def _split(uri):
    """(authority, collection, rkey) of an at:// URI, empty strings where missing."""
    if not isinstance(uri, str) or not uri.startswith("at://"):
        return "", "", ""
    parts = uri[len("at://") :].split("/")
    parts += [""] * (3 - len(parts))
    return parts[0], parts[1], parts[2] if len(parts) == 3 else ""
