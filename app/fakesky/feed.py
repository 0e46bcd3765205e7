"""The AppView's reads of posts and their engagement, as a viewer sees them.

Posts and engagers come from posts.py (computed, never stored), newcomers who arrive over
time from arrivals.py: a reference to a post is (post, kind, index), kind None for the seeded
post itself, index an int for its own engagers or an Arrival. Blocks are the AppView's indexed
ones (appview.py), so a block shows here after the indexing delay like everywhere.

Checked against bluesky-social/atproto (packages/bsky/src):
- api/app/bsky/feed/getPosts.ts: the uris deduplicated, posts whose author has a block either
  way with the viewer left out, unknown ones left out (mapDefined); at most 25
  (lexicons/app/bsky/feed/getPosts.json);
- api/app/bsky/feed/getLikes.ts: the page of likes is cut first (data-plane routes/likes.ts),
  then ``noBlocks`` drops likes whose liker has a block with the post's author (likeBlocks)
  or with the viewer, then ``fillPage`` (api/util.ts) refills; a cursor starting "did:" is
  400 "Cursor appear to be out of date, please try reloading."; a cursor holding "::"
  (``clearlyBadCursor``) answers an empty page;
- api/app/bsky/feed/getRepostedBy.ts (routes/reposts.ts): the same, dropping only reposters
  with a block with the viewer;
- api/app/bsky/feed/getQuotes.ts (routes/quotes.ts): the same, dropping quotes whose author
  has a block with the viewer or with the quoted post's author (postBlocks.embed);
- api/app/bsky/feed/getPostThread.ts and views/index.ts (thread, threadParent,
  threadReplies): an anchor that cannot be shown is 400 NotFound "Post not found: <uri>"
  (the uri with its handle resolved to a DID); an anchor whose author has a block with the
  viewer is a #blockedPost thread; a reply whose author has a block with its parent's author
  is dropped, one whose author has a block with the viewer is a #blockedPost without
  replies; a parent the same way a #blockedPost; ``replies`` absent at depth 0, a list from
  depth 1, newest first (routes/threads.ts orders descendants by sortAt); no pagination;
- views/index.ts (post, embedPostView, recordEmbed, embedBlocked, blockedPost): postView with
  the aggregates, ``viewer`` only for a signed-in viewer; a quote's embed is an
  app.bsky.embed.record#view of the quoted post (#viewRecord, #viewBlocked or
  #viewNotFound); lexicons/app/bsky/feed/defs.json.
"""

from .arrivals import Arrival, page
from .posts import LIKE, QUOTE, REPLY, REPOST, iso, parse_cursor
from .repo import XrpcError

FEED_DEFS = "app.bsky.feed.defs"
EMBED_RECORD = "app.bsky.embed.record"
OUT_OF_DATE_CURSOR = "Cursor appear to be out of date, please try reloading."


class Feed:
    """Post reads for one FakeBluesky; its lock guards every call."""

    def __init__(self, fake):
        self.fake = fake

    @property
    def appview(self):
        return self.fake.appview

    # -- people ------------------------------------------------------------------
    def _author(self, post):
        """(did, handle, Account or None) of a seeded post's author, or None if not shown."""
        found = self.appview.actor(post.author)
        if found is None or (found[3] is not None and found[3].status):
            return None
        return found[0], found[1], found[3]

    def _who(self, ref):
        """(did, handle, Account or None) of whoever wrote a post reference."""
        post, kind, index = ref
        if kind is None:
            return self._author(post)
        if isinstance(index, Arrival):
            return index.did, index.handle, None
        did, handle = post.account(kind, index)
        return did, handle, None

    def resolve(self, uri):
        """(post, kind, index) of a seeded post, an engager's or a newcomer's, or None."""
        ref = self.fake.posts.resolve(uri)
        if ref is None:
            newcomer = self.fake.arrivals.post(uri)
            if newcomer is not None:
                ref = (newcomer.stream.subject, newcomer.stream.kind - 1, newcomer)
        return ref

    @staticmethod
    def _blocked(viewer, did, account=None):
        """views/index.ts viewerBlockExists: a block either way between viewer and did."""
        if viewer is None:
            return False
        return did in viewer.seen_blocks or (
            account is not None and viewer.did in account.seen_blocks
        )

    @staticmethod
    def _blocks_between(first, second):
        """A block either way between two writers (did, handle, Account or None); the
        computed engagers block no one, so only an account's own blocks count."""
        return (first[2] is not None and second[0] in first[2].seen_blocks) or (
            second[2] is not None and first[0] in second[2].seen_blocks
        )

    def _basic(self, viewer, did, handle, account):
        view = self.appview.profile_view(viewer, did, handle, account)
        del view["indexedAt"]  # profileViewBasic has none
        return view

    def _blocked_author(self, viewer, did, account):
        """views/index.ts blockedProfileViewer: the blocks only."""
        author = {"did": did}
        if viewer is not None:
            state = self.appview.viewer_state(viewer, did, account)
            author["viewer"] = {k: state[k] for k in ("blockedBy", "blocking") if k in state}
        return author

    # -- posts -------------------------------------------------------------------
    def _uri_cid(self, ref):
        post, kind, index = ref
        if kind is None:
            return post.uri, post.cid
        if isinstance(index, Arrival):
            return index.uri, index.cid
        return post.record_uri(kind, index), post.record_cid(kind, index)

    @staticmethod
    def _times(ref):
        """(createdAt, indexedAt) in milliseconds; a newcomer's createdAt may be backdated."""
        post, kind, index = ref
        if kind is None:
            return post.created_ms, post.created_ms
        if isinstance(index, Arrival):
            return index.created_ms, index.indexed_ms
        return post.at_ms(index), post.at_ms(index)

    def _record(self, ref):
        post, kind, index = ref
        root = {"uri": post.uri, "cid": post.cid}
        if kind is None:
            text = f"Post {post.rkey}"
        else:
            number = f"n{index.index}" if isinstance(index, Arrival) else index
            text = f"{'Quote' if kind == QUOTE else 'Reply'} {number}"
        record = {"$type": "app.bsky.feed.post", "text": text, "langs": ["en"]}
        if kind == QUOTE:
            record["embed"] = {"$type": EMBED_RECORD, "record": root}
        if kind == REPLY:
            parent_ref = self._parent_ref(ref)
            uri, cid = self._uri_cid(parent_ref)
            record["reply"] = {"root": root, "parent": {"uri": uri, "cid": cid}}
        record["createdAt"] = iso(self._times(ref)[0])
        return record

    def _counts(self, ref):
        """The aggregates the AppView keeps: replyCount counts direct replies only (every
        newcomer's reply answers the post)."""
        post, kind, index = ref
        if kind is None:
            arrived = [self.fake.arrivals.count(post, k) for k in (LIKE, REPOST, QUOTE, REPLY)]
            likes, reposts, quotes = (post.counts[k] + arrived[k] for k in (LIKE, REPOST, QUOTE))
            replies = post.reply_count() + arrived[REPLY]
        else:
            likes = reposts = quotes = 0
            replies = post.reply_count(index) if kind == REPLY and isinstance(index, int) else 0
        return {
            "bookmarkCount": 0,
            "replyCount": replies,
            "repostCount": reposts,
            "likeCount": likes,
            "quoteCount": quotes,
        }

    def post_view(self, viewer, ref, who=None):
        """app.bsky.feed.defs#postView of a reference, or None if it cannot be shown."""
        who = who or self._who(ref)
        if who is None:
            return None
        post, kind, _ = ref
        uri, cid = self._uri_cid(ref)
        record = self._record(ref)
        view = {"uri": uri, "cid": cid, "author": self._basic(viewer, *who), "record": record}
        if kind == QUOTE:
            view["embed"] = self._quoted(viewer, post, who)
        view.update(self._counts(ref), indexedAt=iso(self._times(ref)[1]))
        if viewer is not None:
            view["viewer"] = {"bookmarked": False, "threadMuted": False, "embeddingDisabled": False}
        view["labels"] = []
        return view

    def _quoted(self, viewer, post, quoter):
        """views/index.ts recordEmbed: the quoted post as an app.bsky.embed.record#view."""
        author = self._author(post)
        if author is not None and (
            self._blocked(viewer, author[0], author[2]) or self._blocks_between(quoter, author)
        ):
            record = {
                "$type": f"{EMBED_RECORD}#viewBlocked",
                "uri": post.uri,
                "blocked": True,
                "author": self._blocked_author(viewer, author[0], author[2]),
            }
        elif author is None:
            record = {"$type": f"{EMBED_RECORD}#viewNotFound", "uri": post.uri, "notFound": True}
        else:
            quoted = self.post_view(viewer, (post, None, None), author)
            record = {
                "$type": f"{EMBED_RECORD}#viewRecord",
                "uri": quoted["uri"],
                "cid": quoted["cid"],
                "author": quoted["author"],
                "value": quoted["record"],
                "labels": quoted["labels"],
                "likeCount": quoted["likeCount"],
                "replyCount": quoted["replyCount"],
                "repostCount": quoted["repostCount"],
                "quoteCount": quoted["quoteCount"],
                "indexedAt": quoted["indexedAt"],
                "embeds": [],
            }
        return {"$type": f"{EMBED_RECORD}#view", "record": record}

    def posts(self, viewer, uris):
        views = []
        for uri in dict.fromkeys(uris):  # dedupeStrs
            ref = self.resolve(uri)
            who = ref and self._who(ref)
            if who is None or self._blocked(viewer, who[0], who[2]):
                continue
            views.append(self.post_view(viewer, ref, who))
        return {"posts": views}

    # -- likes, reposts, quotes ----------------------------------------------------------
    def engagement(self, viewer, kind, uri, cid, limit, cursor):
        """getLikes, getRepostedBy or getQuotes of a post URI."""
        if kind == LIKE and cursor and cursor.startswith("did:"):
            raise XrpcError.invalid(OUT_OF_DATE_CURSOR)
        body = {"uri": uri}
        if cid:
            body["cid"] = cid
        ref = self.fake.posts.resolve(uri)
        post = ref[0] if ref is not None and ref[1] is None else None
        items, next_cursor = [], None
        if not (cursor and "::" in cursor):  # clearlyBadCursor: an empty page, no cursor
            try:
                if post is not None:
                    fetch = self._fetch(viewer, post, kind)
                    items, next_cursor = self.appview.fill_page(fetch, limit, cursor)
                elif cursor:
                    parse_cursor(cursor)  # the data plane reads it even for no likes
            except ValueError as error:
                raise XrpcError.invalid("Malformed cursor") from error
        if next_cursor:
            body["cursor"] = next_cursor
        body[("likes", "repostedBy", "posts")[kind]] = items
        return body

    def _fetch(self, viewer, post, kind):
        count = post.counts[kind]
        author = self._author(post)
        # A block between the post's author and a liker or quoter hides that like or quote
        # from everyone (likeBlocks, postBlocks.embed); the engagers block no one.
        hidden = {}
        if kind in (LIKE, QUOTE) and author is not None and author[2] is not None:
            hidden = author[2].seen_blocks
        blocked = viewer.seen_blocks if viewer is not None else {}
        view = self.appview.profile_view
        arrivals = self.fake.arrivals
        stream = arrivals.stream(post, kind)

        def fetch(cursor, limit):
            key = parse_cursor(cursor) if cursor else None
            start = post.first_after(kind, *key) if key else 0
            entries, more = page(stream, arrivals.arrived(stream), count, start, key, limit)
            items = []
            for entry in entries:
                ref = (post, kind, entry)
                did, handle, _ = self._who(ref)
                if did in blocked or did in hidden:
                    continue
                if kind == LIKE:
                    created, indexed = (iso(ms) for ms in self._times(ref))
                    actor = view(viewer, did, handle)
                    items.append({"actor": actor, "createdAt": created, "indexedAt": indexed})
                elif kind == REPOST:
                    items.append(view(viewer, did, handle))
                else:
                    items.append(self.post_view(viewer, ref, (did, handle, None)))
            if not (more and entries):
                return items, None
            last = entries[-1]
            if isinstance(last, Arrival):
                return items, last.cursor
            return items, post.cursor_after(kind, last)

        return fetch

    # -- threads -----------------------------------------------------------------
    def thread(self, viewer, uri, depth, height):
        anchor = self.resolve_uri(uri)
        ref = self.resolve(anchor)
        who = ref and self._who(ref)
        if who is None:
            raise XrpcError.invalid(f"Post not found: {anchor}", "NotFound")
        if self._blocked(viewer, who[0], who[2]):
            return {"thread": self._blocked_post(viewer, anchor, who)}
        node = {"$type": f"{FEED_DEFS}#threadViewPost", "post": self.post_view(viewer, ref, who)}
        parent = self._parent(viewer, ref, who, height)
        if parent is not None:
            node["parent"] = parent
        replies = self._replies(viewer, ref, who, depth)
        if replies is not None:
            node["replies"] = replies
        node["threadContext"] = {}
        return {"thread": node}

    def resolve_uri(self, uri):
        """hydrator.ts resolveUri: the handle of an at:// URI replaced by its DID."""
        if not uri.startswith("at://"):
            return uri
        authority, slash, rest = uri[len("at://") :].partition("/")
        found = self.appview.actor(authority) if authority else None
        return f"at://{found[0]}{slash}{rest}" if found else uri

    def _blocked_post(self, viewer, uri, who):
        return {
            "$type": f"{FEED_DEFS}#blockedPost",
            "uri": uri,
            "blocked": True,
            "author": self._blocked_author(viewer, who[0], who[2]),
        }

    @staticmethod
    def _parent_ref(ref):
        post, kind, index = ref
        if kind != REPLY:
            return None
        parent = None if isinstance(index, Arrival) else post.reply_parent(index)
        return (post, None, None) if parent is None else (post, REPLY, parent)

    def _parent(self, viewer, ref, who, height):
        parent_ref = self._parent_ref(ref)
        if height < 1 or parent_ref is None:
            return None
        parent_who = self._who(parent_ref)
        uri = self._uri_cid(parent_ref)[0]
        if parent_who is None:
            return {"$type": f"{FEED_DEFS}#notFoundPost", "uri": uri, "notFound": True}
        if self._blocks_between(who, parent_who) or self._blocked(
            viewer, parent_who[0], parent_who[2]
        ):
            return self._blocked_post(viewer, uri, parent_who)
        node = {
            "$type": f"{FEED_DEFS}#threadViewPost",
            "post": self.post_view(viewer, parent_ref, parent_who),
        }
        grandparent = self._parent(viewer, parent_ref, parent_who, height - 1)
        if grandparent is not None:
            node["parent"] = grandparent
        node["threadContext"] = {}
        return node

    def _replies(self, viewer, ref, who, depth):
        if depth < 1:
            return None
        post, kind, index = ref
        if kind == QUOTE or isinstance(index, Arrival):
            return []
        children = post.reply_children(index if kind == REPLY else None)
        if kind is None:  # newcomers answer the post: newest first, backdated ones last
            stream = self.fake.arrivals.stream(post, REPLY)
            arrived = self.fake.arrivals.arrived(stream)
            if arrived:
                children = [*stream.on_time(arrived), *children, *stream.backdated_run(arrived)]
        replies = []
        for child in children:
            child_ref = (post, REPLY, child)
            child_who = self._who(child_ref)
            if self._blocks_between(child_who, who):
                continue  # a reply that breaks a block with its parent's author is dropped
            if self._blocked(viewer, child_who[0]):
                replies.append(self._blocked_post(viewer, self._uri_cid(child_ref)[0], child_who))
                continue
            node = {
                "$type": f"{FEED_DEFS}#threadViewPost",
                "post": self.post_view(viewer, child_ref, child_who),
            }
            nested = self._replies(viewer, child_ref, child_who, depth - 1)
            if nested is not None:
                node["replies"] = nested
            node["threadContext"] = {}
            replies.append(node)
        return replies
