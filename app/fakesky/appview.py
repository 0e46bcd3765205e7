"""The AppView: profiles, followers and blocks as a viewer sees them, eventually consistent.

The AppView learns of a block or mute from the firehose and indexes it some time later: a
write shows in viewer state only Config.indexing_delay_s after it was made, and so does its
deletion. Reads use the indexed view, never the repository.

Checked against bluesky-social/atproto:
- packages/bsky/src/api/app/bsky/graph/getFollowers.ts: the page of follows is cut first
  (dataplane routes/follows.ts, keyset on the follow's time and CID, a cursor only when more
  follow), then ``noBlocks`` drops followers with a block either way with the viewer, then
  ``fillPage`` (packages/bsky/src/api/util.ts) asks again for what is missing, at most 10
  reads, so a page can still hold fewer than ``limit`` followers, even none, while a cursor
  still follows. A cursor that is not "<time>__<cid>" is 400 "Malformed cursor".
- packages/bsky/src/api/app/bsky/graph/getBlocks.ts: the viewer's blocks, newest first,
  filled the same way; blocked DIDs the AppView does not know are left out.
- Posts, their engagers and threads: feed.py and posts.py; newcomers who arrive over time,
  listed before (or, backdated, after) a list's own entries: arrivals.py.
- packages/bsky/src/api/app/bsky/actor/getProfile.ts: unknown actor 400 "Profile not found";
  a taken-down one 400 AccountTakedown, a deactivated one 400 AccountDeactivated.
- packages/bsky/src/api/app/bsky/graph/muteActor.ts: unknown actor 400 "Actor not found",
  oneself 400 "Actor cannot mute themselves".
- lexicons/app/bsky/actor/defs.json: profileView, profileViewDetailed, viewerState.
"""

import heapq
from bisect import bisect_left, insort

from .accounts import PROFILE_ERRORS
from .arrivals import Arrival, page
from .graph import parse_cursor
from .repo import BLOCK, XrpcError
from .syntax import tid_micros

CREATED_AT = "2025-01-01T00:00:00.000Z"
FOLLOW = "app.bsky.graph.follow"


class AppView:
    """Reads for one FakeBluesky; its lock guards every call."""

    def __init__(self, fake):
        self.fake = fake
        self._queue = []  # (due, sequence, account, operation, subject, rkey)
        self._sequence = 0

    def clear(self):
        self._queue.clear()

    # -- indexing ------------------------------------------------------------
    def index_later(self, now, account, operation, subject, rkey=None):
        """Show this change (block+, block-, mute+, mute-) after the indexing delay."""
        self._sequence += 1
        due = now + self.fake.config.indexing_delay_s
        heapq.heappush(self._queue, (due, self._sequence, account, operation, subject, rkey))

    def catch_up(self, now):
        queue = self._queue
        while queue and queue[0][0] <= now:
            _, _, account, operation, subject, rkey = heapq.heappop(queue)
            if operation == "block+":
                holders = account.seen_blocks.setdefault(subject, set())
                if not holders:
                    self._follower_blocks(account, subject, add=True)
                holders.add(rkey)
                account.seen_block_subject[rkey] = subject
                insort(account.seen_block_rkeys, rkey)
            elif operation == "block-":
                holders = account.seen_blocks.get(subject)
                if holders is not None and rkey in holders:
                    holders.discard(rkey)
                    if not holders:
                        del account.seen_blocks[subject]
                        self._follower_blocks(account, subject, add=False)
                    del account.seen_block_subject[rkey]
                    rkeys = account.seen_block_rkeys
                    del rkeys[bisect_left(rkeys, rkey)]
            elif operation == "mute+":
                account.seen_mutes.add(subject)
            else:
                account.seen_mutes.discard(subject)

    def _follower_blocks(self, account, subject, add):
        found = self.fake.targets.resolve(subject) if subject.startswith("did:plc:") else None
        if found is None or found[0] != "follower":
            return
        target, index = found[1], found[2]
        indexes = account.seen_follower_blocks.setdefault((target.key, target.count), set())
        if add:
            indexes.add(index)
        else:
            indexes.discard(index)

    def pending(self):
        return len(self._queue)

    # -- actors --------------------------------------------------------------
    def actor(self, actor):
        """(did, handle, followers count, Account or None) of a handle or DID, or None."""
        fake = self.fake
        account = fake.by_did.get(actor) or fake.accounts.get(actor.lower())
        if account is not None:
            return account.did, account.handle, len(fake.followers_of.get(account.did, ())), account
        found = fake.targets.resolve(actor)
        if found is None:
            engager = fake.posts.engager(actor)
            if engager is None:
                newcomer = fake.arrivals.find(actor)
                engager = newcomer and (newcomer.did, newcomer.handle)
            return (*engager, 0, None) if engager else None
        if found[0] == "target":
            target = found[1]
            return target.did, target.handle, target.count + fake.arrivals.count(target), None
        did, handle = found[1].follower(found[2])
        return did, handle, 0, None

    def viewer_state(self, viewer, did, account=None):
        state = {"muted": False, "blockedBy": False}
        if viewer is None:
            return state
        state["muted"] = did in viewer.seen_mutes
        rkeys = viewer.seen_blocks.get(did)
        if rkeys:
            state["blocking"] = f"at://{viewer.did}/{BLOCK}/{max(rkeys)}"
        if account is not None and viewer.did in account.seen_blocks:
            state["blockedBy"] = True
        follow = viewer.follows.get(did)
        if follow is not None:
            state["following"] = f"at://{viewer.did}/{FOLLOW}/{follow}"
        return state

    def profile_view(self, viewer, did, handle, account=None):
        return {
            "did": did,
            "handle": handle,
            "displayName": handle.split(".")[0],
            "viewer": self.viewer_state(viewer, did, account),
            "labels": [],
            "createdAt": CREATED_AT,
            "indexedAt": CREATED_AT,
        }

    def profile(self, viewer, actor):
        found = self.actor(actor)
        if found is None:
            raise XrpcError.invalid("Profile not found")
        did, handle, followers, account = found
        if account is not None and account.status:
            raise XrpcError(*PROFILE_ERRORS[account.status])
        view = self.profile_view(viewer, did, handle, account)
        view.update(
            followersCount=followers,
            followsCount=len(account.follows) if account else 0,
            postsCount=0,
        )
        return view

    def profiles(self, viewer, actors):
        views = []
        for actor in actors:
            try:
                views.append(self.profile(viewer, actor))
            except XrpcError:
                continue  # getProfiles leaves out what it cannot show
        return {"profiles": views}

    # -- followers -------------------------------------------------------------
    def fill_page(self, fetch, limit, cursor):
        """packages/bsky/src/api/util.ts fillPage: read again until the page is full."""
        items, next_cursor = fetch(cursor, limit)
        reads = 1
        while reads < self.fake.config.fill_page_max_requests and next_cursor:
            if len(items) >= limit:
                break
            previous = next_cursor
            more, next_cursor = fetch(next_cursor, limit - len(items))
            items.extend(more)
            reads += 1
            if next_cursor == previous:
                next_cursor = None
        return items, next_cursor

    def followers(self, viewer, actor, limit, cursor):
        found = self.actor(actor)
        if found is None:
            raise XrpcError.invalid(f"Actor not found: {actor}")
        did, handle, _, account = found
        if account is not None and account.status:
            raise XrpcError.invalid(f"Actor not found: {actor}")
        resolved = self.fake.targets.resolve(did)
        if resolved is not None and resolved[0] == "target":
            fetch = self._target_follows(viewer, resolved[1])
        else:
            fetch = self._account_follows(viewer, did)
        try:
            followers, next_cursor = self.fill_page(fetch, limit, cursor)
        except ValueError as error:
            raise XrpcError.invalid("Malformed cursor") from error
        body = {"subject": self.profile_view(viewer, did, handle, account), "followers": followers}
        if next_cursor:
            body["cursor"] = next_cursor
        return body

    def _target_follows(self, viewer, target):
        blocked, blocked_dids = set(), {}
        if viewer is not None:
            blocked = viewer.seen_follower_blocks.get((target.key, target.count), blocked)
            blocked_dids = viewer.seen_blocks
        view = self.profile_view
        arrivals = self.fake.arrivals
        stream = arrivals.stream(target)

        def fetch(cursor, limit):
            key = parse_cursor(cursor) if cursor else None
            start = target.first_after(key[0]) if key else 0
            entries, more = page(stream, arrivals.arrived(stream), target.count, start, key, limit)
            followers = []
            for entry in entries:  # noBlocks: synthetic followers and newcomers block no one
                if isinstance(entry, Arrival):
                    if entry.did not in blocked_dids:
                        followers.append(view(viewer, entry.did, entry.handle))
                elif entry not in blocked:
                    followers.append(view(viewer, *target.follower(entry)))
            if not (more and entries):
                return followers, None
            last = entries[-1]
            if isinstance(last, Arrival):
                return followers, last.cursor
            return followers, target.cursor_after(last)

        return fetch

    def _account_follows(self, viewer, did):
        fake = self.fake
        follows = sorted(fake.followers_of.get(did, {}).items(), key=lambda item: item[1])
        keys = [rkey for _, rkey in follows]

        def fetch(cursor, limit):
            end = len(keys)
            if cursor:
                end = bisect_left(keys, _cursor_rkey(cursor))
            chosen = follows[max(0, end - limit) : end][::-1]
            page = []
            for follower_did, _ in chosen:
                follower = fake.by_did.get(follower_did)
                if follower is None or follower.status:
                    continue
                if viewer is not None and (
                    follower_did in viewer.seen_blocks or viewer.did in follower.seen_blocks
                ):
                    continue
                page.append(self.profile_view(viewer, follower_did, follower.handle, follower))
            more = end - limit > 0 and chosen
            return page, (_cursor_for(chosen[-1][1]) if more else None)

        return fetch

    # -- blocks ----------------------------------------------------------------
    def blocks(self, viewer, limit, cursor):
        rkeys = viewer.seen_block_rkeys

        def fetch(cursor, limit):
            end = bisect_left(rkeys, _cursor_rkey(cursor)) if cursor else len(rkeys)
            chosen = rkeys[max(0, end - limit) : end][::-1]
            page = []
            for rkey in chosen:
                found = self.actor(viewer.seen_block_subject[rkey])
                if found is not None:  # mapDefined: DIDs it does not know are left out
                    did, handle, _, account = found
                    page.append(self.profile_view(viewer, did, handle, account))
            more = end - limit > 0 and chosen
            return page, (_cursor_for(chosen[-1]) if more else None)

        try:
            blocks, next_cursor = self.fill_page(fetch, limit, cursor)
        except ValueError as error:
            raise XrpcError.invalid("Malformed cursor") from error
        body = {"blocks": blocks}
        if next_cursor:
            body["cursor"] = next_cursor
        return body

    # -- mutes -----------------------------------------------------------------
    def mute(self, now, viewer, actor, on):
        found = self.actor(actor)
        if found is None:
            raise XrpcError.invalid("Actor not found")
        did = found[0]
        if did == viewer.did:
            raise XrpcError.invalid("Actor cannot mute themselves")
        if on and did not in viewer.mutes:
            viewer.mutes.add(did)
            self.index_later(now, viewer, "mute+", did)
        elif not on and did in viewer.mutes:
            viewer.mutes.discard(did)
            self.index_later(now, viewer, "mute-", did)


def _cursor_for(rkey):
    """A keyset cursor "<milliseconds>__<key>" for a TID-keyed record."""
    return f"{tid_micros(rkey) // 1000}__{rkey}"


def _cursor_rkey(cursor):
    primary, separator, rkey = cursor.partition("__")
    if not separator or not primary.isdigit() or not rkey:
        raise ValueError(cursor)
    return rkey
