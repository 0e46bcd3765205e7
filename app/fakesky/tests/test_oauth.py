"""The fake's OAuth as an outside client sees it: PyPI atproto-oauth 0.1.0 (MarshalX/atproto
PR #636), unchanged, signs in from a DID through the fake's PLC directory, metadata documents,
PAR, the authorize page, the code exchange, DPoP calls, a refresh and a revocation. Also the
discovery documents, the PLC directory and the scope grammar against the reference's examples.
"""

import asyncio
import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from atproto_identity.resolver import AsyncIdResolver
from atproto_oauth import OAuthClient
from atproto_oauth import client as oauth_client_module
from atproto_oauth import metadata as oauth_metadata_module
from atproto_oauth.scopes.permissions import RepoPermission, RpcPermission
from atproto_oauth.security import _ValidatingAsyncTransport
from atproto_oauth.stores import MemorySessionStore, MemoryStateStore
from cryptography.hazmat.primitives import serialization
from jwcrypto import jwk

from fakesky import scopes
from fakesky.tests.conftest import BLOCK, PASSWORD, now_iso
from fakesky.tests.oauth_kit import CLIENT_ID, REDIRECT_URI, Client, ClientSite

PUBLIC = "https://fake.test"
HANDLE = "alice.fake.test"
SCOPE = (
    "atproto repo:app.bsky.graph.block?action=create&action=delete"
    " rpc:app.bsky.graph.muteActor?aud=did:web:api.bsky.app%23bsky_appview"
)


@pytest.fixture(scope="module")
def site():
    site = ClientSite()
    yield site
    site.close()


class ToTheFake(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """Sends https://fake.test/... to the fake's real address; the Host header stays
    fake.test, as a TLS proxy in front of the fake would leave it. Nothing else leaves."""

    def __init__(self, fake_url):
        parts = urlsplit(fake_url)
        self.host, self.port = parts.hostname, parts.port
        self.inner = httpx.AsyncHTTPTransport()
        self.inner_sync = httpx.HTTPTransport()

    def _rewrite(self, request):
        if request.url.host != urlsplit(PUBLIC).hostname:
            raise httpx.ConnectError(f"the test lets nothing reach {request.url.host}")
        request.url = request.url.copy_with(scheme="http", host=self.host, port=self.port)
        return request

    async def handle_async_request(self, request):
        return await self.inner.handle_async_request(self._rewrite(request))

    def handle_request(self, request):
        return self.inner_sync.handle_request(self._rewrite(request))


@pytest.fixture
def outside_client(fakesky, site, monkeypatch):
    """atproto-oauth's OAuthClient, its HTTP through ToTheFake, its resolver at the fake."""
    fakesky.configure(
        public_url=PUBLIC, oauth_client_fetch_via=site.url, indexing_delay_s=0, login_min_ms=0
    )
    fakesky.account(HANDLE, PASSWORD)
    transport = ToTheFake(fakesky.url)

    def hardened(timeout=5.0, max_redirects=3, allow_localhost=False):
        # atproto_oauth.security.get_hardened_async_client, with the URL check kept.
        return httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=True,
            max_redirects=max_redirects,
            transport=_ValidatingAsyncTransport(transport, allow_localhost),
        )

    monkeypatch.setattr(oauth_client_module, "get_hardened_async_client", hardened)
    monkeypatch.setattr(oauth_metadata_module, "get_hardened_async_client", hardened)
    key = jwk.JWK.generate(kty="EC", crv="P-256", kid="shoestring-1")
    publisher = Client(fakesky.url, PUBLIC, site, scope=SCOPE)
    publisher.key = key
    publisher.publish()
    client = OAuthClient(
        client_id=CLIENT_ID,
        redirect_uri=REDIRECT_URI,
        scope=SCOPE,
        state_store=MemoryStateStore(),
        session_store=MemorySessionStore(),
        client_secret_key=serialization.load_pem_private_key(
            key.export_to_pem(private_key=True, password=None), password=None
        ),
        client_secret_kid="shoestring-1",
    )
    client._id_resolver = AsyncIdResolver(plc_url=fakesky.url)  # no DNS, no plc.directory
    browser = httpx.Client(transport=transport, timeout=10)
    return client, browser


def approve(browser, auth_url, password=PASSWORD):
    """What a person does in a browser: open the page, fill the form, approve."""
    page = browser.get(auth_url)
    assert page.status_code == 200
    fields = dict(re.findall(r'name="(client_id|request_uri)" value="([^"]*)"', page.text))
    username = re.search(r'id="username" name="username"[^>]* value="([^"]*)"', page.text)
    assert username.group(1) == HANDLE  # prefilled from login_hint, resolved to the handle
    answer = browser.post(
        auth_url,
        data={
            **{k: unescape(v) for k, v in fields.items()},
            "username": HANDLE,
            "password": password,
            "decision": "approve",
        },
    )
    assert answer.status_code == 303
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    return {k: v[0] for k, v in parse_qs(location.query).items()}


def test_atproto_oauth_signs_in_calls_refreshes_and_revokes(outside_client, fakesky):
    client, browser = outside_client
    did = fakesky.did(HANDLE)
    block = {
        "repo": did,
        "collection": BLOCK,
        "record": {"$type": BLOCK, "subject": fakesky.did("crowd-5.fake.test"), "createdAt": ""},
    }
    create = f"{PUBLIC}/xrpc/com.atproto.repo.createRecord"

    async def journey():
        auth_url, state = await client.start_authorization(did)
        assert auth_url.startswith(f"{PUBLIC}/oauth/authorize?")
        callback = approve(browser, auth_url)
        assert (callback["state"], callback["iss"]) == (state, PUBLIC)
        session = await client.handle_callback(callback["code"], state, callback["iss"])
        assert session.did == did
        assert session.scope == SCOPE
        block["record"]["createdAt"] = now_iso()
        first = await client.make_authenticated_request(session, "POST", create, json=block)
        assert first.status_code == 200, first.text
        old_access = session.access_token
        session = await client.refresh_session(session)
        assert session.access_token != old_access
        second = await client.make_authenticated_request(session, "POST", create, json=block)
        assert second.status_code == 200, second.text
        await client.revoke_session(session)
        after = await client.make_authenticated_request(session, "POST", create, json=block)
        return after

    after = asyncio.run(journey())
    assert after.status_code == 401
    assert after.json() == {"error": "invalid_token", "message": "Invalid token"}
    assert 'error="invalid_token"' in after.headers["WWW-Authenticate"]
    state = fakesky.state(HANDLE)
    assert state["write_calls"] == 2  # two createRecords; the revoked call wrote nothing
    # The first call had no PDS nonce yet: use_dpop_nonce, then the retry; two more after.
    assert state["calls_by_method"]["com.atproto.repo.createRecord"] == 4
    totals = fakesky.http.get("/_fake/oauth").json()
    assert (totals["tokens"], totals["refreshes"], totals["revocations"]) == (1, 1, 1)
    assert totals["grants_live"] == 0
    assert totals["use_dpop_nonce"] == 2  # the PAR's first try, the first XRPC call


def test_atproto_oauth_gets_the_reference_403_for_a_scope_it_lacks(outside_client, fakesky):
    client, browser = outside_client
    did = fakesky.did(HANDLE)

    async def journey():
        auth_url, state = await client.start_authorization(did)
        callback = approve(browser, auth_url)
        session = await client.handle_callback(callback["code"], state, callback["iss"])
        url = f"{PUBLIC}/xrpc/app.bsky.graph.getFollowers"
        params = {"actor": "crowd-5.fake.test"}
        return await client.make_authenticated_request(session, "GET", url, params=params)

    refused = asyncio.run(journey())
    assert refused.status_code == 403
    needed = "rpc:app.bsky.graph.getFollowers?aud=did:web:api.bsky.app%23bsky_appview"
    assert refused.json() == {
        "error": "ScopeMissingError",
        "message": f'Missing required scope "{needed}"',
    }
    # atproto-oauth writes the scope it would need the same way.
    assert RpcPermission.scope_needed_for("app.bsky.graph.getFollowers", APPVIEW_REF) == needed


APPVIEW_REF = "did:web:api.bsky.app#bsky_appview"


def test_the_metadata_documents_are_the_reference_pds_s(fakesky):
    fakesky.configure(public_url=PUBLIC)
    resource = fakesky.http.get("/.well-known/oauth-protected-resource").json()
    assert resource == {
        "resource": PUBLIC,
        "authorization_servers": [PUBLIC],
        "scopes_supported": [],
        "bearer_methods_supported": ["header"],
        "resource_documentation": "https://atproto.com",
    }
    server = fakesky.http.get("/.well-known/oauth-authorization-server").json()
    assert server["issuer"] == PUBLIC
    assert server["authorization_endpoint"] == f"{PUBLIC}/oauth/authorize"
    assert server["pushed_authorization_request_endpoint"] == f"{PUBLIC}/oauth/par"
    assert server["token_endpoint"] == f"{PUBLIC}/oauth/token"
    assert server["revocation_endpoint"] == f"{PUBLIC}/oauth/revoke"
    assert server["require_pushed_authorization_requests"] is True
    assert server["code_challenge_methods_supported"] == ["S256"]
    assert server["token_endpoint_auth_methods_supported"] == ["none", "private_key_jwt"]
    assert "ES256" in server["dpop_signing_alg_values_supported"]
    assert server["scopes_supported"] == [
        "atproto",
        "transition:email",
        "transition:generic",
        "transition:chat.bsky",
    ]
    assert server["protected_resources"] == [PUBLIC]
    assert server["client_id_metadata_document_supported"] is True
    assert server["authorization_response_iss_parameter_supported"] is True


def test_the_authorize_url_can_live_on_another_origin(fakesky, site):
    demo = "https://demo.example.org:8443/fakesky/oauth/authorize"
    fakesky.http.post("/_fake/oauth", json={"authorize_url": demo}).raise_for_status()
    server = fakesky.http.get("/.well-known/oauth-authorization-server").json()
    assert server["authorization_endpoint"] == demo
    assert server["issuer"] == fakesky.url  # the issuer stays the fake's own origin
    fakesky.configure(oauth_client_fetch_via=site.url, login_min_ms=0)
    fakesky.account(HANDLE, PASSWORD)
    client = Client(fakesky.url, fakesky.url, site)
    client.publish()
    request_uri = client.par().json()["request_uri"]
    page = client.http.get(
        "/fakesky/oauth/authorize", params={"client_id": CLIENT_ID, "request_uri": request_uri}
    )
    assert page.status_code == 200
    assert 'id="approve"' in page.text


def test_the_fake_answers_as_a_plc_directory_and_for_handles(fakesky):
    fakesky.configure(public_url=PUBLIC)
    fakesky.account(HANDLE, PASSWORD)
    did = fakesky.did(HANDLE)
    doc = fakesky.http.get(f"/{did}")
    assert doc.status_code == 200
    assert doc.json()["id"] == did
    assert doc.json()["alsoKnownAs"] == [f"at://{HANDLE}"]
    assert doc.json()["service"][0]["serviceEndpoint"] == PUBLIC
    unknown = fakesky.http.get("/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
    assert unknown.status_code == 404
    assert unknown.json() == {"message": "DID not registered: did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}
    answer = fakesky.http.get("/.well-known/atproto-did", headers={"Host": f"{HANDLE}:443"})
    assert (answer.status_code, answer.text) == (200, did)
    assert answer.headers["Content-Type"].startswith("text/plain")
    other = fakesky.http.get("/.well-known/atproto-did", headers={"Host": "bob.fake.test"})
    assert (other.status_code, other.text) == (404, "User not found")


@pytest.mark.parametrize(
    ("scope", "parsed"),
    [
        ("repo:app.bsky.graph.block", True),
        ("repo:app.bsky.graph.block?action=create&action=delete", True),
        ("repo?collection=app.bsky.graph.block&collection=app.bsky.feed.post", True),
        ("repo:*?action=delete", True),
        ("repo:app.bsky.graph.block?action=destroy", False),
        ("repo:app.bsky.graph.block?collection=app.bsky.feed.post", False),  # both forms
        ("repo:block", False),  # not an NSID
        ("rpc:app.bsky.graph.muteActor?aud=did:web:api.bsky.app%23bsky_appview", True),
        ("rpc:app.bsky.graph.muteActor?aud=did:web:api.bsky.app#bsky_appview", True),
        ("rpc:app.bsky.graph.muteActor?aud=*", True),
        ("rpc:*?aud=did:web:api.bsky.app%23bsky_appview", True),
        ("rpc:*?aud=*", False),  # rpc-permission.ts: forbidden
        ("rpc:app.bsky.graph.muteActor", False),  # aud is required
        ("rpc:app.bsky.graph.muteActor?aud=did:web:api.bsky.app", False),  # no #service
        ("rpc:app.bsky.graph.muteActor?aud=did:key:z6Mk%23x", False),  # plc or web only
        ("rpc?lxm=app.bsky.graph.muteActor&lxm=app.bsky.graph.unmuteActor&aud=*", True),
        ("account:email?action=manage", True),
        ("identity:handle", True),
        ("blob:image/*", True),
        ("blob:*/png", False),
        ("include:app.bsky.authFull", True),
        ("transition:generic", True),
        ("transition:everything", False),
        ("openid", False),
    ],
)
def test_the_scope_grammar_is_the_reference_s(scope, parsed):
    assert scopes.is_atproto_scope(scope) is parsed


def test_a_refusal_names_the_scope_as_the_reference_writes_it():
    assert scopes.rpc_scope_needed("app.bsky.graph.muteActor", APPVIEW_REF) == (
        "rpc:app.bsky.graph.muteActor?aud=did:web:api.bsky.app%23bsky_appview"
    )
    assert scopes.repo_scope_needed(BLOCK, "delete") == "repo:app.bsky.graph.block?action=delete"
    # atproto-oauth (a client nobody here wrote) formats them the same way.
    assert str(RepoPermission.from_string("repo:app.bsky.graph.block?action=delete")) == (
        scopes.repo_scope_needed(BLOCK, "delete")
    )
    assert str(RpcPermission.from_string(scopes.rpc_scope_needed("a.b.c", APPVIEW_REF))) == (
        "rpc:a.b.c?aud=did:web:api.bsky.app%23bsky_appview"
    )


def test_transition_generic_allows_what_an_app_password_allows_but_chat():
    generic = scopes.Permissions("atproto transition:generic")
    assert generic.allows_repo(BLOCK, "delete")
    assert generic.allows_rpc("app.bsky.graph.muteActor", APPVIEW_REF)
    assert not generic.allows_rpc("chat.bsky.convo.sendMessage", "did:web:api.bsky.chat#bsky_chat")
    granular = scopes.Permissions(SCOPE)
    assert granular.allows_repo(BLOCK, "create")
    assert not granular.allows_repo(BLOCK, "update")
    assert not granular.allows_repo("app.bsky.graph.listitem", "create")
    assert granular.allows_rpc("app.bsky.graph.muteActor", APPVIEW_REF)
    assert not granular.allows_rpc("app.bsky.graph.muteActor", "did:web:other.example#x")
    assert not granular.allows_rpc("app.bsky.graph.unmuteActor", APPVIEW_REF)
