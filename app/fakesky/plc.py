"""The fake as a PLC directory and as the host of its accounts' handles.

- GET /did:plc:... answers the account's DID document, the one createSession already returns
  (#atproto_pds = the fake's public URL), as application/did+ld+json; an unknown DID is 404
  {"message": "DID not registered: <did>"}, as plc.directory answers (did-method-plc's server).
- GET /.well-known/atproto-did answers the DID of the account whose handle is the request's
  Host (without port), text/plain; otherwise 404 "User not found", as the reference PDS does
  (packages/pds/src/well-known.ts).
Only the fake's accounts have documents: targets, followers and engagers have none.
"""

import json
import re

_DID_PLC_PATH = re.compile(r"^/(did:plc:[a-z2-7]{24})$")


def did_document(fake, path):
    """(status, content type, body) for a PLC directory path, or None for another path."""
    found = _DID_PLC_PATH.match(path)
    if not found:
        return None
    did = found.group(1)
    with fake.lock:
        account = fake.by_did.get(did)
        doc = fake.did_doc(account) if account else None
    if doc is None:
        body = {"message": f"DID not registered: {did}"}
        return 404, "application/json; charset=utf-8", json.dumps(body).encode()
    return 200, "application/did+ld+json; charset=utf-8", json.dumps(doc).encode()


def atproto_did(fake, host):
    """(status, content type, body) of /.well-known/atproto-did for this Host header."""
    handle = (host or "").strip().lower().split(":")[0]
    with fake.lock:
        account = fake.accounts.get(handle)
    if account is None:
        return 404, "text/plain; charset=utf-8", b"User not found"
    return 200, "text/plain; charset=utf-8", account.did.encode()
