"""The app's OAuth client (bluesky.oauth) against the fake's authorization server over real
HTTP: discovery, PAR with the DPoP nonce dance, the authorize page, tokens, DPoP-bound
calls through BlueskyClient, refresh, revocation and the scope fallback."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from joserfc import jwk

from bluesky import oauth
from bluesky.client import BlueskyClient, check_pds_url
from bluesky.errors import BadRequest, UnsafePds
from bluesky.oauth import FALLBACK_SCOPE, DpopAuth, GrantRevoked, OAuthClient, OAuthError

from .authorize import decide

HANDLE = "alice.fake.test"
PASSWORD = "alice-app-pass"
APPVIEW = "did:web:api.bsky.app#bsky_appview"


class ClientSite:
    """The app's public side as an authorization server sees it: the client metadata
    document at the client_id URL and the JWKS it names, on loopback."""

    def __init__(self, key, scope):
        self.key = key
        self.scope = scope
        self.fetches = 0
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                site.fetches += 1
                body = {
                    "/client-metadata.json": site.metadata,
                    "/jwks.json": lambda: {"keys": [site.key.as_dict(private=False)]},
                }.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                data = json.dumps(body()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def client_id(self):
        return f"{self.origin}/client-metadata.json"

    @property
    def redirect_uri(self):
        return f"{self.origin}/oauth/callback"

    def metadata(self):
        return {
            "client_id": self.client_id,
            "client_name": "Shoestring (test)",
            "client_uri": self.origin,
            "application_type": "web",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "redirect_uris": [self.redirect_uri],
            "scope": f"{self.scope} transition:generic",
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "ES256",
            "jwks_uri": f"{self.origin}/jwks.json",
            "dpop_bound_access_tokens": True,
        }


@pytest.fixture
def network(fakesky):
    fakesky.configure(indexing_delay_s=0, oauth_allow_loopback_clients=True)
    fakesky.account(HANDLE, PASSWORD)
    oauth._NONCES.clear()
    return fakesky


@pytest.fixture
def site():
    key = jwk.ECKey.generate_key("P-256", private=True, auto_kid=True)
    server = ClientSite(key, oauth.granular_scope(APPVIEW))
    yield server
    server.server.shutdown()


def new_client(fakesky, site, key=None):
    def resolve_handle(handle):
        with BlueskyClient(fakesky.url, "", "", allow_loopback_pds=True) as client:
            return client.resolve_handle(handle)

    return OAuthClient(
        site.client_id,
        key or site.key,
        resolve_handle=resolve_handle,
        plc_url=fakesky.url,
        check_url=lambda url: check_pds_url(url, allow_loopback=True),
        redirect_uri=site.redirect_uri,
    )


def sign_in(fakesky, site, scope=None):
    with new_client(fakesky, site) as client:
        url, pending = client.start(HANDLE, scope or oauth.granular_scope(APPVIEW))
        query, location = decide(url, HANDLE, PASSWORD)
        assert location.startswith(site.redirect_uri)
        return client.finish(pending, query), pending


def test_discovery_goes_handle_did_pds_authorization_server(network, site):
    with new_client(network, site) as client:
        who = client.identity("@Alice.fake.test")
        meta = client.authorization_server(who.pds_url)
    assert who.did == network.did(HANDLE)
    assert who.handle == HANDLE
    assert who.pds_url == network.url
    assert meta["issuer"] == network.url
    assert meta["require_pushed_authorization_requests"] is True


def test_a_handle_the_did_document_does_not_claim_is_refused(network, site):
    network.account("bob.fake.test", "bob-app-pass")
    with new_client(network, site) as client:
        client._resolve_handle = lambda handle: network.did("bob.fake.test")
        with pytest.raises(OAuthError, match="does not confirm"):
            client.identity(HANDLE)


def test_sign_in_gives_dpop_bound_tokens_for_the_granular_scopes(network, site):
    grant, pending = sign_in(network, site)
    assert grant.did == network.did(HANDLE)
    assert grant.granular
    assert pending["scope"] == oauth.granular_scope(APPVIEW)
    assert "repo:app.bsky.graph.block?action=create&action=delete" in grant.scope.split()
    assert grant.refresh_token
    assert grant.access_token
    # The first PAR had no nonce: the server asked for one, and the retry carried it.
    assert network.oauth_state()["use_dpop_nonce"] >= 1
    assert site.fetches >= 2  # the metadata and the JWKS


def test_the_grant_blocks_and_mutes_through_the_client(network, site):
    grant, _ = sign_in(network, site)
    renewed = []
    crowd = [network.did(f"f{i}.crowd-10.fake.test") for i in range(3)]
    with BlueskyClient(
        network.url,
        grant.did,
        "",
        allow_loopback_pds=True,
        oauth=DpopAuth(grant, lambda g: renewed.append(g) or g),
    ) as client:
        before = network.oauth_state()["use_dpop_nonce"]
        created = client.block_many(crowd)
        client.mute(crowd[0])
        page = client.followers_page("crowd-10.fake.test")
        # The nonce the authorization server gave is this origin's: no new challenge.
        assert network.oauth_state()["use_dpop_nonce"] == before
    assert set(created) == set(crowd)
    # The AppView knows who is asking: the accounts it blocked are left out of the page.
    assert len(page.followers) == 7
    assert not {p.did for p in page.followers} & set(crowd)
    assert network.state(HANDLE)["block_count"] == 3
    assert renewed == []


def test_a_rotated_nonce_costs_one_retry(network, site):
    grant, _ = sign_in(network, site)
    with BlueskyClient(
        network.url, grant.did, "", allow_loopback_pds=True, oauth=DpopAuth(grant, lambda g: g)
    ) as client:
        client.resolve("crowd-10.fake.test")
        network.oauth(nonce_rotate=True)
        before = network.oauth_state()["use_dpop_nonce"]
        client.resolve("crowd-10.fake.test")
    assert network.oauth_state()["use_dpop_nonce"] == before + 1


def test_an_expired_access_token_is_refreshed_once_and_the_old_refresh_token_dies(network, site):
    grant, _ = sign_in(network, site)
    stored = [grant]

    def renew(old):
        assert old.refresh_token == stored[-1].refresh_token
        with new_client(network, site) as client:
            stored.append(client.refresh(old))
        return stored[-1]

    network.oauth(expire_access_tokens=True)
    with BlueskyClient(
        network.url, grant.did, "", allow_loopback_pds=True, oauth=DpopAuth(grant, renew)
    ) as client:
        client.resolve("crowd-10.fake.test")
        client.resolve("crowd-10.fake.test")
    assert len(stored) == 2
    assert stored[1].refresh_token != grant.refresh_token
    assert stored[1].access_token != grant.access_token
    # The refresh token was spent: using it again is refused (and ends the grant).
    with new_client(network, site) as client, pytest.raises(GrantRevoked):
        client.refresh(grant)


def test_a_revoked_grant_is_refused_and_says_so(network, site):
    grant, _ = sign_in(network, site)
    with new_client(network, site) as client:
        client.revoke(grant)
    with new_client(network, site) as client, pytest.raises(GrantRevoked):
        client.refresh(grant)
    with (
        BlueskyClient(
            network.url,
            grant.did,
            "",
            allow_loopback_pds=True,
            oauth=DpopAuth(grant, lambda g: (_ for _ in ()).throw(GrantRevoked("gone"))),
        ) as client,
        pytest.raises(GrantRevoked),
    ):
        client.resolve("crowd-10.fake.test")


def test_a_pds_without_granular_scopes_is_asked_for_transition_generic(network, site):
    network.oauth(granular_scopes=False)
    grant, pending = sign_in(network, site)
    assert pending["scope"] == FALLBACK_SCOPE
    assert not grant.granular


def test_the_narrow_grant_cannot_do_what_it_did_not_ask_for(network, site):
    """Only blocks and the named AppView calls: posting is refused by the PDS."""
    grant, _ = sign_in(network, site)
    with (
        BlueskyClient(
            network.url, grant.did, "", allow_loopback_pds=True, oauth=DpopAuth(grant, lambda g: g)
        ) as client,
        pytest.raises(BadRequest),
    ):
        client._call(
            "POST",
            "com.atproto.repo.createRecord",
            json={
                "repo": grant.did,
                "collection": "app.bsky.feed.post",
                "record": {"$type": "app.bsky.feed.post", "text": "hi", "createdAt": "x"},
            },
        )


def test_a_wrong_client_key_is_refused_at_par(network, site):
    stranger = jwk.ECKey.generate_key("P-256", private=True, auto_kid=True)
    with new_client(network, site, key=stranger) as client, pytest.raises(OAuthError):
        client.start(HANDLE, oauth.granular_scope(APPVIEW))


def test_a_denied_approval_is_an_error_not_a_grant(network, site):
    with new_client(network, site) as client:
        url, pending = client.start(HANDLE, oauth.granular_scope(APPVIEW))
        query, _ = decide(url, HANDLE, PASSWORD, decision="deny")
        assert query["error"] == "access_denied"
        with pytest.raises(OAuthError, match="access_denied"):
            client.finish(pending, query)


def test_a_callback_with_another_state_or_issuer_is_refused(network, site):
    with new_client(network, site) as client:
        url, pending = client.start(HANDLE, oauth.granular_scope(APPVIEW))
        query, _ = decide(url, HANDLE, PASSWORD)
        with pytest.raises(OAuthError, match="state"):
            client.finish(pending, {**query, "state": "forged"})
        with pytest.raises(OAuthError, match="came from"):
            client.finish(pending, {**query, "iss": "https://evil.example"})


def test_tokens_for_another_account_are_revoked_not_kept(network, site):
    """The request was for alice; bob approved it at the server: no grant, and the tokens
    made are ended (as the reference client does after a failed exchange)."""
    network.account("bob.fake.test", "bob-app-pass")
    with new_client(network, site) as client:
        url, pending = client.start(HANDLE, oauth.granular_scope(APPVIEW))
        query, _ = decide(url, "bob.fake.test", "bob-app-pass")
        revoked = network.oauth_state()["grants_revoked"]
        with pytest.raises(OAuthError, match="signed in as"):
            client.finish(pending, query)
    assert network.oauth_state()["grants_revoked"] == revoked + 1


def test_no_token_goes_to_a_server_on_a_private_address(network, site):
    """In production (no loopback allowed) an issuer or endpoint on a loopback, private or
    reserved address is refused before anything is sent there."""
    with new_client(network, site) as client:
        client._check_url = lambda url: check_pds_url(url, allow_loopback=False)
        with pytest.raises(UnsafePds):
            client.authorization_server(network.url)
    grant, _ = sign_in(network, site)
    with new_client(network, site) as client:
        client._check_url = lambda url: check_pds_url(url, allow_loopback=False)
        with pytest.raises(UnsafePds):
            client.refresh(grant)
        with pytest.raises(UnsafePds):
            client.revoke(grant)


def test_a_refresh_follows_the_account_to_its_new_pds_host(network, site):
    """Bluesky moves accounts between PDS hosts under one authorization server: the refresh
    reads the DID document again and the grant goes where it now points."""
    grant, _ = sign_in(network, site)
    moved = network.url.replace("127.0.0.1", "localhost")
    with new_client(network, site) as client:
        read = client._did_document

        def after_the_move(did):
            document = read(did)
            for service in document["service"]:
                service["serviceEndpoint"] = moved
            return document

        client._did_document = after_the_move
        # The new host is the same fake under another name: its resource document names
        # the name it was asked by, as a second PDS host's would.
        get_json = client._get_json

        def as_the_new_host(url, **options):
            data = get_json(url, **options)
            if url.startswith(moved) and "resource" in data:
                data["resource"] = moved
            return data

        client._get_json = as_the_new_host
        fresh = client.refresh(grant)
    assert grant.pds_url == network.url
    assert fresh.pds_url == moved
    assert fresh.issuer == grant.issuer
