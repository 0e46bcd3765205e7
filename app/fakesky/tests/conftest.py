import time

import httpx
import pytest

BLOCK = "app.bsky.graph.block"
PASSWORD = "alice-app-pass"


class Xrpc:
    """A bare XRPC caller: every test sees the status, headers and body the fake sent."""

    def __init__(self, url):
        self.http = httpx.Client(base_url=url + "/xrpc/", timeout=10)
        self.session = None

    def login(self, identifier, password=PASSWORD):
        response = self.post(
            "com.atproto.server.createSession",
            {"identifier": identifier, "password": password},
            token=None,
        )
        if response.status_code == 200:
            self.session = response.json()
        return response

    # token="session": the signed-in session's access token, if any; None: no token.
    def _headers(self, token):
        if token == "session":
            token = self.session["accessJwt"] if self.session else None
        return {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, nsid, token="session", **params):  # noqa: S107
        return self.http.get(nsid, params=params, headers=self._headers(token))

    def post(self, nsid, body=None, token="session"):  # noqa: S107
        return self.http.post(nsid, json=body, headers=self._headers(token))

    @property
    def did(self):
        return self.session["did"]

    def block(self, subject, rkey=None, **extra):
        record = {"$type": BLOCK, "subject": subject, "createdAt": now_iso(), **extra}
        body = {"repo": self.did, "collection": BLOCK, "record": record}
        if rkey:
            body["rkey"] = rkey
        return self.post("com.atproto.repo.createRecord", body)

    def apply(self, *writes):
        return self.post("com.atproto.repo.applyWrites", {"repo": self.did, "writes": list(writes)})


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def create(subject, rkey=None):
    write = {
        "$type": "com.atproto.repo.applyWrites#create",
        "collection": BLOCK,
        "value": {"$type": BLOCK, "subject": subject, "createdAt": now_iso()},
    }
    if rkey:
        write["rkey"] = rkey
    return write


def delete(rkey):
    return {"$type": "com.atproto.repo.applyWrites#delete", "collection": BLOCK, "rkey": rkey}


def rkey_of(uri):
    return uri.rsplit("/", 1)[1]


@pytest.fixture
def xrpc(fakesky):
    return Xrpc(fakesky.url)


@pytest.fixture
def alice(fakesky, xrpc):
    """Alice's account, signed in; the AppView indexes at once unless a test says otherwise."""
    fakesky.configure(indexing_delay_s=0)
    fakesky.account("alice.fake.test", PASSWORD)
    assert xrpc.login("alice.fake.test").status_code == 200
    return xrpc
