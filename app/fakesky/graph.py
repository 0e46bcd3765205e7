"""Deterministic synthetic accounts: a target's followers are computed, not stored.

A handle like ``crowd-12345.fake.test`` names a target with 12,345 followers;
follower i of it is ``did:plc:crowd12345x<i>`` with handle ``f<i>.crowd-12345.fake.test``.
A 250,000-follower target costs nothing until a page of it is asked for.
"""

import re

_TARGET = re.compile(r"^(?P<name>[a-z]+)-(?P<count>\d+)\.fake\.test$")
_TARGET_DID = re.compile(r"^did:plc:(?P<name>[a-z]+)(?P<count>\d+)$")
_FOLLOWER_DID = re.compile(r"^did:plc:(?P<name>[a-z]+)(?P<count>\d+)x(?P<index>\d+)$")


def target_from_actor(actor):
    """(name, follower_count) for a synthetic target handle or DID, else None."""
    match = _TARGET.match(actor) or _TARGET_DID.match(actor)
    if not match:
        return None
    return match["name"], int(match["count"])


def target_did(name, count):
    return f"did:plc:{name}{count}"


def target_handle(name, count):
    return f"{name}-{count}.fake.test"


def follower(name, count, index):
    return f"did:plc:{name}{count}x{index}", f"f{index}.{name}-{count}.fake.test"


def synthetic_profile(actor):
    """(did, handle, followers_count) of a synthetic target or follower, else None."""
    target = target_from_actor(actor)
    if target:
        name, count = target
        return target_did(name, count), target_handle(name, count), count
    match = _FOLLOWER_DID.match(actor)
    if match:
        did, handle = follower(match["name"], int(match["count"]), int(match["index"]))
        return did, handle, 0
    return None
