"""One account's repository of block records, with the reference PDS's write semantics.

Checked against bluesky-social/atproto:
- packages/pds/src/repo/prepare.ts: a record without "$type" takes the collection's; another
  "$type" is refused; a caller's rkey must be a valid record key and, for a "tid"-keyed
  collection such as app.bsky.graph.block, a TID; records of known lexicons are validated
  unless validate is false. Every refusal is 400 InvalidRequest with the reference's message.
- lexicons/app/bsky/graph/block.json: "subject" (a DID) and "createdAt" (a datetime), both
  required.
- packages/repo/src/mst/mst.ts: adding an existing key throws "There is already a value at
  key", updating or deleting a missing one "Could not find a record with key". They are plain
  errors, which packages/xrpc-server/src/errors.ts turns into 500 InternalServerError
  "Internal Server Error", and the commit is not written: applyWrites fails whole.
- packages/pds/src/api/com/atproto/repo/deleteRecord.ts: deleting a missing record returns
  without a commit ("No-op if record already doesn't exist").
- packages/pds/src/api/com/atproto/repo/createRecord.ts and actor-store/record/reader.ts
  (getBacklinkConflicts): createRecord of a block (or follow) deletes the account's other
  records in that collection with the same subject, in the same commit; applyWrites does not.
- packages/pds/src/actor-store/record/reader.ts listRecordsForCollection: newest rkey first,
  the cursor is the last rkey and lists what comes after it.
"""

import json
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass

from . import syntax

BLOCK = "app.bsky.graph.block"
CREATE = "com.atproto.repo.applyWrites#create"
UPDATE = "com.atproto.repo.applyWrites#update"
DELETE = "com.atproto.repo.applyWrites#delete"
RESULT_TYPES = {
    CREATE: "com.atproto.repo.applyWrites#createResult",
    UPDATE: "com.atproto.repo.applyWrites#updateResult",
    DELETE: "com.atproto.repo.applyWrites#deleteResult",
}


class XrpcError(Exception):
    """An answer other than 200, as the reference's XRPCError carries it."""

    def __init__(self, status, error, message):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message

    @classmethod
    def invalid(cls, message, error="InvalidRequest"):
        return cls(400, error, message)

    @classmethod
    def internal(cls):
        # packages/xrpc-server/src/errors.ts: no details for 500s.
        return cls(500, "InternalServerError", "Internal Server Error")


@dataclass(frozen=True)
class Record:
    subject: str
    created_at: str
    cid: str

    def value(self):
        return {"$type": BLOCK, "subject": self.subject, "createdAt": self.created_at}


@dataclass(frozen=True)
class Write:
    """One prepared operation: action is CREATE, UPDATE or DELETE."""

    action: str
    rkey: str
    record: Record | None = None
    validated: bool = True


class Repo:
    """The block collection of one account. Not thread-safe: the fake's lock guards it."""

    def __init__(self):
        self.records = {}  # rkey -> Record
        self._rkeys = []  # sorted, for listRecords
        self.by_subject = {}  # subject DID -> set of rkeys (the PDS's backlinks)
        self.duplicates = 0  # records beyond the first for one subject

    def __len__(self):
        return len(self.records)

    def _add(self, rkey, record):
        self.records[rkey] = record
        if not self._rkeys or rkey > self._rkeys[-1]:
            self._rkeys.append(rkey)
        else:
            insort(self._rkeys, rkey)
        holders = self.by_subject.setdefault(record.subject, set())
        if holders:
            self.duplicates += 1
        holders.add(rkey)

    def _remove(self, rkey):
        record = self.records.pop(rkey)
        del self._rkeys[bisect_left(self._rkeys, rkey)]
        holders = self.by_subject[record.subject]
        holders.discard(rkey)
        if holders:
            self.duplicates -= 1
        else:
            del self.by_subject[record.subject]
        return record

    def commit(self, writes):
        """Apply writes in order, all or none, as the MST does. Returns (added, removed):
        lists of (rkey, Record) for the AppView to index."""
        present = {}
        for write in writes:
            exists = present.get(write.rkey, write.rkey in self.records)
            if write.action == CREATE and exists:
                raise XrpcError.internal()  # mst.ts: "There is already a value at key"
            if write.action != CREATE and not exists:
                raise XrpcError.internal()  # mst.ts: "Could not find a record with key"
            present[write.rkey] = write.action != DELETE
        added, removed = [], []
        for write in writes:
            if write.action != CREATE:
                removed.append((write.rkey, self._remove(write.rkey)))
            if write.action != DELETE:
                self._add(write.rkey, write.record)
                added.append((write.rkey, write.record))
        return added, removed

    def conflicts(self, subject):
        """rkeys of this account's blocks of subject (createRecord replaces them)."""
        return sorted(self.by_subject.get(subject, ()))

    def page(self, limit, cursor=None, reverse=False):
        """(rkeys, cursor) as listRecords pages: newest first unless reverse."""
        if reverse:
            start = bisect_right(self._rkeys, cursor) if cursor is not None else 0
            keys = self._rkeys[start : start + limit]
        else:
            end = bisect_left(self._rkeys, cursor) if cursor is not None else len(self._rkeys)
            keys = self._rkeys[max(0, end - limit) : end][::-1]
        return keys, (keys[-1] if keys else None)


def prepare(kind, write, tids, validate=None, index=None):
    """Check one create/update/delete as prepare.ts does; returns a Write or raises XrpcError.

    ``write`` is an applyWrites operation (``index`` its position, its record under "value")
    or a createRecord/deleteRecord body (its record under "record")."""
    collection = write.get("collection")
    rkey = write.get("rkey")
    if not isinstance(collection, str) or not collection:
        raise XrpcError.invalid(f'{_path(index)} must have the property "collection"')
    if collection != BLOCK:
        raise XrpcError.invalid(
            f"fakesky imitates only {BLOCK} records, not {collection} (docs/fakesky.md)"
        )
    if kind == DELETE:
        if not isinstance(rkey, str) or not syntax.is_record_key(rkey):
            raise XrpcError.invalid(f"{_path(index)}/rkey must be a valid Record Key")
        return Write(DELETE, rkey)
    value = write.get("value") if index is not None else write.get("record")
    if not isinstance(value, dict):
        raise XrpcError.invalid(f"{_path(index)} must be an object")
    value_type = value.get("$type", collection)
    if value_type != collection:
        raise XrpcError.invalid(f"Invalid $type: expected {collection}, got {value_type}")
    if rkey is not None:
        if not syntax.is_record_key(rkey):
            raise XrpcError.invalid(f"Invalid record key: {rkey}")
    elif kind == UPDATE:
        raise XrpcError.invalid(f'{_path(index)} must have the property "rkey"')
    if validate is not False:
        if rkey is not None and not syntax.is_tid(rkey):
            raise XrpcError.invalid(f"Invalid record key for {BLOCK}: must be a valid TID")
        problem = _record_problem(value)
        if problem:
            raise XrpcError.invalid(f"Invalid {BLOCK} record: {problem}")
    subject, created_at = value.get("subject"), value.get("createdAt")
    if not isinstance(subject, str) or not isinstance(created_at, str):
        # Unvalidated records are stored as they come; the fake needs a subject string.
        raise XrpcError.invalid(f"fakesky stores only {BLOCK} records with a subject string")
    canonical = json.dumps(
        {"$type": BLOCK, "createdAt": created_at, "subject": subject}, sort_keys=True
    ).encode()
    record = Record(subject, created_at, syntax.cid_for(canonical))
    return Write(kind, rkey or tids.next(), record, validate is not False)


def _record_problem(value):
    for name in ("subject", "createdAt"):
        if name not in value:
            return f'Record must have the property "{name}"'
    if not syntax.is_did(value["subject"]):
        return "Record/subject must be a valid did"
    problem = syntax.datetime_problem(value["createdAt"])
    if problem:
        return f"Record/createdAt {problem}"
    return None


def _path(index):
    return "Input" if index is None else f"Input/writes/{index}"
