"""The AT Protocol's string syntaxes the fake checks and produces, as the reference checks them.

Checked against bluesky-social/atproto:
- TIDs: packages/syntax/src/tid.ts (13 base32-sortable characters, first one 2-7 or a-j);
- record keys: packages/syntax/src/recordkey.ts;
- DIDs: packages/syntax/src/did.ts;
- datetimes: packages/syntax/src/datetime.ts (RFC 3339 with 'Z' or +-hh:mm, never -00:00);
- CIDs: CIDv1, dag-cbor, sha2-256, base32 ("bafyrei...") as the PDS prints record CIDs.
"""

import base64
import hashlib
import re
import threading
import time
from datetime import datetime

# Base32 "sortable" alphabet of TIDs: the characters sort in the order of their values.
_TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
_RECORD_KEY = re.compile(r"^[a-zA-Z0-9_~.:-]{1,512}$")
_DID = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]$")
_DATETIME = re.compile(
    r"^[0-9]{4}-(0[1-9]|1[012])-([0-2][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)"
    r"(\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_HANDLE = re.compile(
    r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$"
)


def is_tid(value):
    return isinstance(value, str) and bool(_TID.match(value))


def is_record_key(value):
    return isinstance(value, str) and bool(_RECORD_KEY.match(value)) and value not in (".", "..")


def is_did(value):
    return isinstance(value, str) and len(value) <= 2048 and bool(_DID.match(value))


def is_handle(value):
    return isinstance(value, str) and len(value) <= 253 and bool(_HANDLE.match(value))


def datetime_problem(value):
    """None for a valid atproto datetime, else the reason (the reference's wording)."""
    if not isinstance(value, str):
        return "datetime must be a string"
    if len(value) > 64:
        return "datetime is too long (64 chars max)"
    if value.endswith("-00:00"):
        return 'datetime can not use "-00:00" for UTC timezone'
    if not _DATETIME.match(value):
        return (
            "datetime is not in a valid format (must match RFC 3339 & ISO 8601"
            " with 'Z' or ±hh:mm timezone)"
        )
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return "datetime did not parse as ISO 8601"
    return None


def tid_from_micros(micros, clock_id=0):
    """The 13-character TID of a timestamp in microseconds (top bit always 0)."""
    value = ((micros & ((1 << 53) - 1)) << 10) | (clock_id & 0x3FF)
    return "".join(_TID_ALPHABET[(value >> shift) & 31] for shift in range(60, -1, -5))


def tid_micros(tid):
    """The timestamp in microseconds a TID carries."""
    value = 0
    for char in tid:
        value = (value << 5) | _TID_ALPHABET.index(char)
    return value >> 10


class TidClock:
    """Hands out strictly increasing TIDs, like the reference's TID.next()."""

    def __init__(self):
        self._last = 0
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"_last": self._last}  # the fake's state file: the lock is made anew

    def __setstate__(self, state):
        self.__init__()
        self._last = state["_last"]

    def next(self):
        with self._lock:
            self._last = max(self._last + 1, time.time_ns() // 1000)
            return tid_from_micros(self._last)


def cid_for(data):
    """A CIDv1 (dag-cbor, sha2-256) in base32 for these bytes: 'bafyrei' and 52 more characters."""
    digest = hashlib.sha256(data).digest()
    raw = bytes([0x01, 0x71, 0x12, 0x20]) + digest
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def multikey_for(seed):
    """A well-formed secp256k1 public-key multibase (z + base58btc), derived from seed.

    It verifies nothing: the fake signs its tokens with a shared secret, as the
    reference PDS signs session tokens with HS256.
    """
    raw = bytes([0xE7, 0x01, 0x02]) + hashlib.sha256(seed.encode()).digest()
    number = int.from_bytes(raw, "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = _BASE58[digit] + out
    return "z" + out
