"""Record keys for new records, made before the first attempt to write them.

A TID (atproto's timestamp identifier) is 13 base32-sortable characters: 53 bits of
microseconds since the epoch and 10 bits of clock id. A block keeps the TID it was given
for every attempt, so a retry after a lost answer creates the same record again and the PDS
refuses the duplicate, instead of the network holding two blocks of one account.
"""

import random
import threading
import time

_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_lock = threading.Lock()
_last = 0
# Two processes making TIDs in the same microsecond differ by clock id.
_CLOCK_ID = random.SystemRandom().randrange(1024)


def _encode(value):
    return "".join(_ALPHABET[(value >> shift) & 31] for shift in range(60, -1, -5))


def _decode(tid):
    value = 0
    for char in tid:
        value = (value << 5) | _ALPHABET.index(char)
    return value


def tid_before(tid):
    """The key that sorts just before this TID: a listRecords cursor that includes it."""
    return _encode(_decode(tid) - 1)


def next_tids(count):
    """`count` new TIDs, increasing, never repeated by this process."""
    global _last
    with _lock:
        start = max(_last + 1, time.time_ns() // 1000)
        _last = start + count - 1
    return [
        _encode(((micros & ((1 << 53) - 1)) << 10) | _CLOCK_ID)
        for micros in range(start, start + count)
    ]


def is_tid(value):
    return (
        isinstance(value, str)
        and len(value) == 13
        and value[0] in _ALPHABET[:16]
        and all(char in _ALPHABET for char in value)
    )
