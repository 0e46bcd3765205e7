"""Arrivals: a pile-on keeps growing. New followers of a target and new likes, reposts, quotes
and replies of a seeded post arrive at a set rate, computed from the clock, never stored.

``POST /_fake/arrivals {"subject", "kind", "per_minute", "backdate_every"}`` or
``--arrivals SUBJECT:KIND:PER_MINUTE[:BACKDATE_EVERY]`` starts a stream: SUBJECT is a synthetic
target (a handle or DID, graph.py) for ``followers``, a seeded post's at:// URI (its authority a
DID or a handle, posts.py) for ``likes``, ``reposts``, ``quotes`` or ``replies``. From the moment
it is set, arrival j happens at start + j * 60,000 / per_minute milliseconds (the first one at
once); setting the stream again starts a new segment at the new rate from that moment, and
``per_minute`` 0 stops it (what arrived stays). A stream keeps one small tuple per time it was
set: an hour of 600 a minute costs nothing until a page is asked for.

Newcomers. Arrival j is a new account: the handle ``n<letter><j>.<label>`` (letter f, l, r, q
or p as graph.py and posts.py name followers and engagers; label the target's handle, or
``<rkey>.<author handle>``), e.g. ``nf0.crowd-10.fake.test`` or
``nl3.3lpileon2abcd.crowd-10.fake.test``; its DID graph.py's did:plc encoding of kind
KIND_ARRIVAL, the stream's number, its kind and j. Each kind's newcomers are distinct people.

Times. Arrival j's indexedAt is when it arrived (never older than its list's newest entry,
whatever the clock says). The AppView lists newest first by sortAt = least(createdAt,
indexedAt) (data-plane routes/follows.ts, likes.ts, ...), and a client may backdate createdAt:
with ``backdate_every`` N > 0 every Nth arrival of the segment (j - first + 1 a multiple of N)
has createdAt = (its list's oldest entry) - a year - j ms. So a list reads, newest first:
the arrivals that are not backdated (newest first), the subject's own followers or engagers,
then the backdated arrivals (the newest arrival always last). A client that polls only the
first page never meets a backdated one; one that rescans to the end does.

Cursors are keys, "<sortAt ms>__<record CID>", compared as (sortAt, CID) as the reference's
TimeCidKeyset does: every sortAt of a list is distinct, so an arrival between two page reads
lands above the cursor (this pass misses it) or, backdated, below everything already read;
no account is listed twice or skipped.
"""

import re
from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from typing import NamedTuple

from . import graph, posts, syntax

KINDS = ("followers", *posts.KIND_NAMES)  # a stream's kind code is its place here
FOLLOWERS = 0
_LETTERS = "flrqp"
_COLLECTIONS = ("app.bsky.graph.follow", *posts.COLLECTIONS)
MS_PER_MINUTE = 60_000
MAX_PER_MINUTE = MS_PER_MINUTE  # one a millisecond: every arrival has its own time
MAX_ARRIVALS = graph.MAX_FOLLOWERS  # a stream stops there (j must fit the DID)
BACKDATED_BY_MS = 365 * 24 * 3600 * 1000
FLAG_FORMAT = "SUBJECT:KIND:PER_MINUTE[:BACKDATE_EVERY]"
_HANDLE = re.compile(r"^n(?P<letter>[flrqp])(?P<index>[0-9]{1,9})\.(?P<label>.+)$")


def code_of(kind=None):
    """A stream's kind code: followers (None), or a posts.py engagement kind."""
    return FOLLOWERS if kind is None else kind + 1


def check_rate(per_minute, backdate_every):
    """ValueError naming a bad per_minute or backdate_every."""
    for name, value, top in (
        ("per_minute", per_minute, MAX_PER_MINUTE),
        ("backdate_every", backdate_every, MAX_ARRIVALS),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise ValueError(f"arrivals {name} must be a whole number 0-{top}: {value!r}")


def parse_flag(text):
    """(subject, kind, per_minute, backdate_every) of an --arrivals value; ValueError if bad.
    SUBJECT may hold colons (at://did:plc:...): the kind is found from the right."""
    parts = text.split(":")
    for numbers in (1, 2):
        if len(parts) > numbers + 1 and parts[-numbers - 1] in KINDS:
            subject, kind = ":".join(parts[: -numbers - 1]), parts[-numbers - 1]
            break
    else:
        raise ValueError(f"expected {FLAG_FORMAT}, KIND one of {', '.join(KINDS)}: {text!r}")
    if not subject:
        raise ValueError(f"{text!r}: SUBJECT is a target's handle or a post's at:// URI")
    try:
        rate = [int(part) for part in parts[-numbers:]]
    except ValueError:
        raise ValueError(f"{text!r}: PER_MINUTE and BACKDATE_EVERY are whole numbers") from None
    rate += [0] * (2 - len(rate))
    return subject, kind, *rate  # Arrivals.start checks the numbers


def _happened(elapsed_ms, per_minute):
    """Arrivals of a segment elapsed_ms after it started: k arrives at k * 60,000 //
    per_minute ms, so those with k * 60,000 < (elapsed + 1) * per_minute."""
    if elapsed_ms < 0 or per_minute == 0:
        return 0
    return -(-(elapsed_ms + 1) * per_minute // MS_PER_MINUTE)


class Segment(NamedTuple):
    first: int  # j of its first arrival
    start_ms: int  # when that one arrives
    stamp_ms: int  # its indexedAt: start_ms, unless the list holds newer entries
    per_minute: int
    backdate_every: int


@dataclass(frozen=True)
class Arrival:
    """Newcomer ``index`` of a stream, and its follow, like, repost or post record."""

    stream: "Stream"
    index: int

    @cached_property
    def did(self):
        stream = self.stream
        return graph.synthetic_did(graph.KIND_ARRIVAL, stream.number, stream.kind, self.index)

    @cached_property
    def handle(self):
        return f"n{_LETTERS[self.stream.kind]}{self.index}.{self.stream.label}"

    @cached_property
    def indexed_ms(self):
        return self.stream.stamp(self.index)

    @cached_property
    def created_ms(self):
        if self.stream.backdated(self.index):
            return self.stream.oldest_ms - BACKDATED_BY_MS - self.index
        return self.indexed_ms

    @property
    def sort_ms(self):
        return min(self.created_ms, self.indexed_ms)

    @cached_property
    def rkey(self):
        return syntax.tid_from_micros(self.indexed_ms * 1000, clock_id=self.stream.kind)

    @cached_property
    def uri(self):
        return f"at://{self.did}/{_COLLECTIONS[self.stream.kind]}/{self.rkey}"

    @cached_property
    def cid(self):
        return syntax.cid_for(self.uri.encode())

    @property
    def cursor(self):
        return f"{self.sort_ms}__{self.cid}"


class Stream:
    """The arrivals of one subject's list: followers of a Target, or one kind of a Post."""

    def __init__(self, number, kind, subject):
        self.number, self.kind, self.subject = number, kind, subject
        if kind == FOLLOWERS:
            self.label, self.newest_ms, self.oldest_ms = (
                subject.handle,
                graph.FOLLOWED_AT_MS,
                subject.oldest_ms,
            )
        else:
            self.label = f"{subject.rkey}.{subject.author_handle}"
            self.newest_ms, self.oldest_ms = subject.base_ms, subject.oldest_ms(kind - 1)
        longest = f"n{_LETTERS[kind]}{MAX_ARRIVALS}.{self.label}"
        if not syntax.is_handle(longest):
            raise ValueError(f"arrival handles like {longest} would not be valid handles")
        self.segments = []
        self._firsts = []

    def set_rate(self, now_ms, per_minute, backdate_every):
        arrived = self.arrived(now_ms)
        if self.segments and self.segments[-1].first == arrived:
            self.segments.pop()  # none arrived at the old rate: only the new one counts
        newest = self.stamp(arrived - 1) if arrived else self.newest_ms
        stamp = max(now_ms, newest + 1)
        self.segments.append(Segment(arrived, now_ms, stamp, per_minute, backdate_every))
        self._firsts = [segment.first for segment in self.segments]

    # -- what has arrived ------------------------------------------------------------
    def arrived(self, now_ms):
        if not self.segments:
            return 0
        last = self.segments[-1]
        return min(MAX_ARRIVALS, last.first + _happened(now_ms - last.start_ms, last.per_minute))

    def _segment(self, index):
        return self.segments[bisect_right(self._firsts, index) - 1]

    def _end(self, position, arrived):
        """One past the last arrival of segment ``position``; ``arrived``: the stream's count."""
        return self._firsts[position + 1] if position + 1 < len(self._firsts) else arrived

    def stamp(self, index):
        segment = self._segment(index)
        return segment.stamp_ms + (index - segment.first) * MS_PER_MINUTE // segment.per_minute

    def backdated(self, index):
        segment = self._segment(index)
        every = segment.backdate_every
        return bool(every) and (index - segment.first + 1) % every == 0

    def backdated_count(self, arrived):
        return sum(
            (self._end(position, arrived) - segment.first) // segment.backdate_every
            for position, segment in enumerate(self.segments)
            if segment.backdate_every
        )

    def arrival(self, index):
        return Arrival(self, index)

    # -- the two runs of a list: newest arrivals on top, backdated ones at the end ---------
    def _on_time_at_or_below(self, index):
        """The newest arrival not backdated at ``index`` or older, or -1."""
        while index >= 0:
            segment = self._segment(index)
            every = segment.backdate_every
            if every == 1:
                index = segment.first - 1
            elif every and (index - segment.first + 1) % every == 0:
                return index - 1  # every >= 2: the one before is on time
            else:
                return index
        return -1

    def _backdated_at_or_above(self, index, arrived):
        """The first backdated arrival at ``index`` or newer (below ``arrived``), or None."""
        for position in range(bisect_right(self._firsts, index) - 1, len(self.segments)):
            segment = self.segments[position]
            every = segment.backdate_every
            index = max(index, segment.first)
            if every:
                offset = index - segment.first
                candidate = segment.first + -(-(offset + 1) // every) * every - 1
                if candidate < self._end(position, arrived):
                    return candidate
        return None

    def on_time(self, arrived, key=None):
        """Arrivals not backdated, newest first, older than ``key`` (ms, cid) if given."""
        index = arrived - 1
        if key is not None:
            index = self._last_stamped_before(key, arrived)
        index = self._on_time_at_or_below(index)
        while index >= 0:
            yield Arrival(self, index)
            index = self._on_time_at_or_below(index - 1)

    def _last_stamped_before(self, key, arrived):
        """The newest arrival with (indexedAt, cid) < key, or -1."""
        ms, cid = key
        index = -1
        for position in range(len(self.segments) - 1, -1, -1):
            segment = self.segments[position]
            if segment.stamp_ms < ms and segment.per_minute:
                older = _happened(ms - 1 - segment.stamp_ms, segment.per_minute)
                end = self._end(position, arrived)
                index = min(segment.first + older, end) - 1
                break
        tied = index + 1
        if tied < arrived and self.stamp(tied) == ms and Arrival(self, tied).cid < cid:
            index = tied
        return index

    def backdated_run(self, arrived, key=None):
        """Backdated arrivals as they end a list (oldest first), after ``key`` if given."""
        index = 0
        if key is not None:
            ms, cid = key
            level = self.oldest_ms - BACKDATED_BY_MS - ms  # the index whose sortAt is ms
            index = max(0, level + 1)
            if 0 <= level < arrived and self.backdated(level) and Arrival(self, level).cid < cid:
                index = level
        found = self._backdated_at_or_above(index, arrived)
        while found is not None:
            yield Arrival(self, found)
            found = self._backdated_at_or_above(found + 1, arrived)

    def summary(self, arrived):
        last = self.segments[-1]
        subject = self.subject
        return {
            "subject": subject.handle if self.kind == FOLLOWERS else subject.uri,
            "kind": KINDS[self.kind],
            "per_minute": last.per_minute,
            "backdate_every": last.backdate_every,
            "arrived": arrived,
            "backdated": self.backdated_count(arrived),
            "handles": f"n{_LETTERS[self.kind]}<j>.{self.label}",
        }


def page(stream, arrived, count, start, key, limit):
    """Up to ``limit`` entries of a list newest first after a keyset ``key`` (None: from the
    top), and whether more follow: Arrivals on time, then the indexes ``start`` .. ``count``
    - 1 of the subject's own entries (the caller found ``start`` from the key), then the
    backdated Arrivals."""
    entries = iter(range(start, count))
    if stream is not None and arrived:
        entries = _chain(stream.on_time(arrived, key), entries, stream.backdated_run(arrived, key))
    taken = list(islice(entries, limit))
    return taken, next(entries, None) is not None


def _chain(*runs):
    for run in runs:
        yield from run


class Arrivals:
    """Every stream, by number and by subject; ``now_ms`` is the time of the call in flight."""

    def __init__(self):
        self.streams = []
        self._by_subject = {}  # (kind code, subject key) -> Stream
        self._by_label = {}  # (letter, label) -> Stream
        self.now_ms = 0

    def tick(self, now):
        self.now_ms = int(now * 1000)

    @staticmethod
    def _key(code, subject):
        if code == FOLLOWERS:
            return code, subject.key, subject.count
        return code, subject.number

    def start(self, code, subject, per_minute, backdate_every):
        """Set the rate of a subject's stream (a Target's followers, code 0, or a Post's kind)."""
        check_rate(per_minute, backdate_every)
        stream = self._by_subject.get(self._key(code, subject))
        if stream is None:
            stream = Stream(len(self.streams), code, subject)
            self.streams.append(stream)
            self._by_subject[self._key(code, subject)] = stream
            self._by_label[(_LETTERS[code], stream.label)] = stream
        stream.set_rate(self.now_ms, per_minute, backdate_every)
        return stream

    def stream(self, subject, kind=None):
        """The stream of a Target's followers (kind None) or a Post's kind, or None."""
        return self._by_subject.get(self._key(code_of(kind), subject))

    def arrived(self, stream):
        return 0 if stream is None else stream.arrived(self.now_ms)

    def count(self, subject, kind=None):
        return self.arrived(self.stream(subject, kind))

    def find(self, actor):
        """The Arrival a DID or handle names, if it has arrived, or None."""
        if actor.startswith("did:"):
            decoded = graph.decode_did(actor)
            if decoded is None or decoded[0] != graph.KIND_ARRIVAL:
                return None
            _, number, code, index = decoded
            if number >= len(self.streams) or self.streams[number].kind != code:
                return None
            stream = self.streams[number]
        else:
            match = _HANDLE.match(actor.lower())
            stream = match and self._by_label.get((match["letter"], match["label"]))
            if not stream or match["index"] != str(int(match["index"])):
                return None
            index = int(match["index"])
        return Arrival(stream, index) if index < self.arrived(stream) else None

    def post(self, uri):
        """The Arrival whose quote or reply post this at:// URI is, or None."""
        did, separator, rkey = uri[len("at://") :].partition(f"/{posts.POST}/")
        if not uri.startswith("at://did:") or not separator:
            return None
        found = self.find(did)
        if found is None or KINDS[found.stream.kind] not in ("quotes", "replies"):
            return None
        return found if found.rkey == rkey else None

    def summaries(self):
        return [stream.summary(self.arrived(stream)) for stream in self.streams]
