"""Synthetic targets: accounts whose followers are computed, not stored.

A handle like ``crowd-12345.fake.test`` names a target with 12,345 followers; its follower i
has the handle ``f<i>.crowd-12345.fake.test``. ``--target troll.example.com:5000`` registers
a target under any handle. Nothing is stored per follower: a 200,000-follower target costs
nothing until a page of it is asked for.

DIDs look like real did:plc identifiers (``did:plc:`` and 24 base32 characters, as PLC
derives them from a hash) and are reversible without a table: 120 bits hold the kind, a
check value, the target's key, its follower count and the follower's index, mixed by an
invertible permutation so that neighbours do not look alike. Decoding a DID is a few integer
operations, so a page of followers never scans anything. The same encoding, with its own kind,
names the computed likers, reposters, quoters and repliers of seeded posts (posts.py) and the
newcomers who arrive over time (arrivals.py).

Followers are listed newest first. Follower i followed at FOLLOWED_AT_MS - i milliseconds, and
a page's cursor is "<that time>__<follow record CID>", the reference AppView's keyset cursor
(packages/bsky/src/data-plane/server/db/pagination.ts, TimeCidKeyset): a key into the follow
list, not an offset.
"""

import hashlib
import re
from dataclasses import dataclass

from . import syntax

# did:plc identifiers are RFC 4648 base32, lower case.
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
# Three characters (15 bits) at a time: encoding a DID is eight look-ups.
_TRIPLES = [_B32[i >> 10] + _B32[(i >> 5) & 31] + _B32[i & 31] for i in range(1 << 15)]
_TRIPLE_VALUE = {triple: value for value, triple in enumerate(_TRIPLES)}
_BITS = 120
_MASK = (1 << _BITS) - 1
_MUL1 = 0x9E3779B97F4A7C15F39CC0605CEDC835 & _MASK | 1
_MUL2 = 0xC2B2AE3D27D4EB4F165667B19E3779F9 & _MASK | 1
_INV1 = pow(_MUL1, -1, 1 << _BITS)
_INV2 = pow(_MUL2, -1, 1 << _BITS)

# Engagers of seeded posts: posts.py; newcomers who arrive over time: arrivals.py.
KIND_ARRIVAL, KIND_TARGET, KIND_FOLLOWER, KIND_ENGAGER = 0, 1, 2, 3
_CHECK_BITS, _KEY_BITS, _COUNT_BITS, _INDEX_BITS = 13, 51, 27, 27
MAX_FOLLOWERS = (1 << _COUNT_BITS) - 1
_NAME_LETTERS = 10  # 5 bits a letter, in the low 50 bits of the key
_REGISTERED = 1 << 50  # keys with this bit set are --target registrations

FOLLOWED_AT_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: follower 0 is the newest
SUFFIX = ".fake.test"
_AUTO_HANDLE = re.compile(r"^(?P<name>[a-z]{1,10})-(?P<count>[0-9]{1,9})\.fake\.test$")
_FOLLOWER_HANDLE = re.compile(r"^f(?P<index>[0-9]{1,9})\.(?P<target>.+)$")


def _mix(value):
    value ^= value >> 63
    value = (value * _MUL1) & _MASK
    value ^= value >> 61
    value = (value * _MUL2) & _MASK
    value ^= value >> 60
    return value


def _unmix(value):
    value ^= value >> 60
    value = (value * _INV2) & _MASK
    value ^= value >> 61
    value = (value * _INV1) & _MASK
    value ^= value >> 63
    return value


def _check(kind, key, count, index):
    mixed = (key ^ (count << 11) ^ (index << 29) ^ kind) * 0x9E3779B97F4A7C15
    return (mixed >> 40) & ((1 << _CHECK_BITS) - 1)


def synthetic_did(kind, key, count, index):
    """The did:plc of a computed account: ``key`` < 2**51, ``count`` and ``index`` < 2**27."""
    value = (
        kind << 118
        | _check(kind, key, count, index) << 105
        | key << 54
        | count << _INDEX_BITS
        | index
    )
    return "did:plc:" + _base32(_mix(value))


def _base32(value):
    t = _TRIPLES
    return (
        t[value >> 105]
        + t[(value >> 90) & 32767]
        + t[(value >> 75) & 32767]
        + t[(value >> 60) & 32767]
        + t[(value >> 45) & 32767]
        + t[(value >> 30) & 32767]
        + t[(value >> 15) & 32767]
        + t[value & 32767]
    )


def decode_did(did):
    """(kind, key, count, index) of a synthetic DID, or None."""
    if len(did) != 32 or not did.startswith("did:plc:"):
        return None
    v = _TRIPLE_VALUE
    try:
        value = (
            v[did[8:11]] << 105
            | v[did[11:14]] << 90
            | v[did[14:17]] << 75
            | v[did[17:20]] << 60
            | v[did[20:23]] << 45
            | v[did[23:26]] << 30
            | v[did[26:29]] << 15
            | v[did[29:32]]
        )
    except KeyError:
        return None
    value = _unmix(value)
    index = value & MAX_FOLLOWERS
    count = (value >> _INDEX_BITS) & MAX_FOLLOWERS
    key = (value >> 54) & ((1 << _KEY_BITS) - 1)
    kind = value >> 118
    if (value >> 105) & ((1 << _CHECK_BITS) - 1) != _check(kind, key, count, index):
        return None
    return kind, key, count, index


def _name_key(name):
    key = 0
    for char in name:
        key = (key << 5) | (ord(char) - ord("a") + 1)
    return key


def _key_name(key):
    letters = []
    while key:
        letters.append(chr((key & 31) + ord("a") - 1))
        key >>= 5
    return "".join(reversed(letters))


@dataclass(frozen=True)
class Target:
    key: int
    handle: str
    count: int

    @property
    def did(self):
        return synthetic_did(KIND_TARGET, self.key, self.count, 0)

    def follower(self, index):
        """(did, handle) of follower ``index`` (0 is the newest)."""
        return synthetic_did(KIND_FOLLOWER, self.key, self.count, index), f"f{index}.{self.handle}"

    def cursor_after(self, index):
        """The reference's keyset cursor for a page that ended with follower ``index``."""
        follow_cid = syntax.cid_for(f"{self.did}/follow/{index}".encode())
        return f"{FOLLOWED_AT_MS - index}__{follow_cid}"

    @property
    def oldest_ms(self):
        """When the oldest follow was made (the newest: FOLLOWED_AT_MS)."""
        return FOLLOWED_AT_MS - max(self.count - 1, 0)

    @staticmethod
    def first_after(ms):
        """The first follower index older than a cursor's milliseconds."""
        return max(0, FOLLOWED_AT_MS - ms + 1)


def parse_cursor(cursor):
    """(milliseconds, CID) of a follow list's cursor; ValueError for a malformed one."""
    primary, separator, secondary = cursor.partition("__")
    if not separator or not secondary or "__" in secondary:
        raise ValueError(cursor)
    return int(primary), secondary


class Targets:
    """The synthetic targets: those named by the handle pattern, and --target registrations."""

    def __init__(self):
        self._registered = []  # registration number -> Target
        self._by_handle = {}
        self._by_key = {}  # (key, count) -> Target, so decoding a DID builds nothing

    def register(self, handle, count):
        """A target under any handle (``--target``); returns it."""
        handle = handle.lower()
        if handle in self._by_handle:
            return self._by_handle[handle]
        if not syntax.is_handle(handle):
            raise ValueError(f"not a valid handle: {handle}")
        if not 0 <= count <= MAX_FOLLOWERS:
            raise ValueError(f"follower count must be 0-{MAX_FOLLOWERS}")
        target = Target(_REGISTERED | len(self._registered), handle, count)
        self._registered.append(target)
        self._by_handle[handle] = target
        return target

    def registered(self):
        return list(self._registered)

    def _from_key(self, key, count):
        target = self._by_key.get((key, count))
        if target is None:
            target = self._build_from_key(key, count)
            if target is not None:
                self._by_key[(key, count)] = target
        return target

    def _build_from_key(self, key, count):
        if key & _REGISTERED:
            number = key & (_REGISTERED - 1)
            if number < len(self._registered) and self._registered[number].count == count:
                return self._registered[number]
            return None
        name = _key_name(key)
        if not name or len(name) > _NAME_LETTERS or _name_key(name) != key:
            return None
        return Target(key, f"{name}-{count}{SUFFIX}", count)

    def by_handle(self, handle):
        handle = handle.lower()
        target = self._by_handle.get(handle)
        if target is not None:
            return target
        match = _AUTO_HANDLE.match(handle)
        if match and int(match["count"]) <= MAX_FOLLOWERS:
            return Target(_name_key(match["name"]), handle, int(match["count"]))
        return None

    def resolve(self, actor):
        """What a handle or DID names: ("target", Target), ("follower", Target, index), or None."""
        if actor.startswith("did:"):
            decoded = decode_did(actor)
            if decoded is None:
                return None
            kind, key, count, index = decoded
            if kind in (KIND_ENGAGER, KIND_ARRIVAL):
                return None
            target = self._from_key(key, count)
            if target is None:
                return None
            if kind == KIND_TARGET:
                return ("target", target) if index == 0 else None
            return ("follower", target, index) if index < count else None
        target = self.by_handle(actor)
        if target is not None:
            return ("target", target)
        match = _FOLLOWER_HANDLE.match(actor.lower())
        if match:
            target = self.by_handle(match["target"])
            index = int(match["index"])
            if target is not None and index < target.count:
                return ("follower", target, index)
        return None


def account_did(handle):
    """A stable did:plc for an ordinary fake account (PLC hashes its genesis operation)."""
    digest = hashlib.sha256(f"fakesky account {handle}".encode()).digest()
    return "did:plc:" + _base32(int.from_bytes(digest[:15], "big"))
