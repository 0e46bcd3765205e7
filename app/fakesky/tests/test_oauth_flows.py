"""What the fake's OAuth refuses, with the reference's statuses and errors, seen by a bare client
(oauth_kit.Client) that can get any part of a request wrong."""

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from jwcrypto import jwk

from fakesky.fake import FakeBluesky
from fakesky.tests.conftest import BLOCK, PASSWORD, create, delete, now_iso
from fakesky.tests.oauth_kit import (
    APPVIEW,
    CLIENT_ID,
    REDIRECT_URI,
    Client,
    ClientSite,
    claims_of,
    pkce,
)

HANDLE = "alice.fake.test"
BLOCKS = "repo:app.bsky.graph.block?action=create"
MUTE = f"rpc:app.bsky.graph.muteActor?aud={APPVIEW}"


@pytest.fixture(scope="module")
def site():
    site = ClientSite()
    yield site
    site.close()


@pytest.fixture
def client(fakesky, site):
    """A confidential client whose documents the fake fetches from the test's site."""
    fakesky.configure(oauth_client_fetch_via=site.url, indexing_delay_s=0, login_min_ms=0)
    fakesky.account(HANDLE, PASSWORD)
    client = Client(
        fakesky.url, fakesky.url, site, scope=f"atproto transition:generic {BLOCKS} {MUTE}"
    )
    client.publish()
    return client


def error(response):
    return response.status_code, response.json()["error"], response.json()["error_description"]


def xrpc_error(response):
    return response.status_code, response.json()["error"], response.json()["message"]


def block_body(client, did):
    record = {"$type": BLOCK, "subject": "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "createdAt": now_iso()}
    return {"repo": did, "collection": BLOCK, "record": record}


# -- DPoP at the authorization server ---------------------------------------------------------


def test_a_proof_without_nonce_is_told_the_nonce_then_passes(client):
    first = client.post(
        "/oauth/par", client.par_form(), proof=client.proof("POST", "/oauth/par", nonce=None)
    )
    assert error(first) == (
        400,
        "use_dpop_nonce",
        "Authorization server requires nonce in DPoP proof",
    )
    assert "WWW-Authenticate" not in first.headers  # at the authorization server: a plain 400
    assert first.headers["DPoP-Nonce"] == client.nonce
    assert client.par().status_code == 201


def test_every_authorization_server_answer_carries_a_nonce(client):
    for path in ("/oauth/par", "/oauth/token", "/oauth/revoke"):
        answer = client.http.post(path, data={})
        assert answer.headers["DPoP-Nonce"], path
        assert answer.headers["Cache-Control"] == "no-store"


def test_a_replayed_proof_is_refused(client):
    client.par()  # a nonce
    proof = client.proof("POST", "/oauth/par")
    form = client.par_form()
    assert client.post("/oauth/par", form, proof=proof).status_code == 201
    again = client.post("/oauth/par", form, proof=proof)
    assert error(again) == (401, "invalid_dpop_proof", "DPoP proof replayed")
    assert again.headers["WWW-Authenticate"].startswith('DPoP algs="RS256 RS384')
    assert (
        'error="invalid_dpop_proof", error_description="DPoP proof replayed"'
        in (again.headers["WWW-Authenticate"])
    )


def test_a_proof_too_old_is_refused_with_the_reference_window(client, fakesky):
    client.par()
    fifteen_s_old = client.proof("POST", "/oauth/par", iat=int(time.time()) - 15)
    # 10 s max age + 180 s clock tolerance (dpop-manager.ts): 15 s old passes ...
    assert client.post("/oauth/par", client.par_form(), proof=fifteen_s_old).status_code == 201
    fakesky.configure(oauth_dpop_clock_tolerance_s=0)
    refused = client.post(
        "/oauth/par",
        client.par_form(),
        proof=client.proof("POST", "/oauth/par", iat=int(time.time()) - 15),
    )
    assert error(refused) == (
        401,
        "invalid_dpop_proof",
        'Failed to verify DPoP proof: "iat" claim timestamp check failed (too far in the past)',
    )
    fakesky.configure(oauth_dpop_clock_tolerance_s=180)
    ancient = client.proof("POST", "/oauth/par", iat=int(time.time()) - 191)
    assert client.post("/oauth/par", client.par_form(), proof=ancient).status_code == 401


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"htm": "GET"}, 'DPoP "htm" mismatch'),
        ({"htu": "http://elsewhere.example/oauth/par"}, 'DPoP "htu" mismatch'),
        ({"htu": "ftp://x/oauth/par"}, 'DPoP "htu" is not a valid URL'),
        ({"jti": None}, 'DPoP "jti" missing'),
        ({"ath": "x"}, 'DPoP "ath" claim not allowed'),
    ],
)
def test_a_proof_for_another_request_is_refused(client, change, message):
    client.par()
    answer = client.post(
        "/oauth/par", client.par_form(), proof=client.proof("POST", "/oauth/par", **change)
    )
    assert error(answer) == (401, "invalid_dpop_proof", message)


def test_a_proof_that_is_no_dpop_jwt_is_refused(client):
    client.par()
    wrong_typ = client.proof("POST", "/oauth/par", header={"typ": "JWT"})
    assert error(client.post("/oauth/par", client.par_form(), proof=wrong_typ)) == (
        401,
        "invalid_dpop_proof",
        'Failed to verify DPoP proof: unexpected "typ" JWT header value',
    )
    other_key = jwk.JWK.generate(kty="EC", crv="P-256")
    forged = client.proof(
        "POST", "/oauth/par", header={"jwk": other_key.export_public(as_dict=True)}
    )
    assert error(client.post("/oauth/par", client.par_form(), proof=forged))[1:] == (
        "invalid_dpop_proof",
        "Failed to verify DPoP proof: signature verification failed",
    )


def test_the_htu_is_the_public_url_whatever_the_request_reached(client, fakesky):
    fakesky.configure(public_url="https://pds.example.org")
    client.issuer = "https://pds.example.org"
    assert client.par().status_code == 201  # sent to http://127.0.0.1:port, named the public URL
    client.issuer = fakesky.url
    assert error(client.par())[2] == 'DPoP "htu" mismatch'


# -- PAR ------------------------------------------------------------------------------------------


def test_par_answers_a_single_use_request_uri(client):
    answer = client.par()
    assert answer.status_code == 201
    body = answer.json()
    assert body["request_uri"].startswith("urn:ietf:params:oauth:request_uri:req-")
    assert 295 <= body["expires_in"] <= 300  # PAR_EXPIRES_IN


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"code_challenge_method": "plain"},
            'atproto requires use of "S256" code_challenge_method',
        ),
        ({"code_challenge": None, "code_challenge_method": None}, "Use of PKCE is required"),
        (
            {"redirect_uri": "https://evil.example.com/cb"},
            "Invalid redirect_uri https://evil.example.com/cb",
        ),
        ({"login_hint": "not a handle"}, 'Invalid login_hint "not a handle"'),
    ],
)
def test_par_refuses_what_the_reference_refuses(client, params, expected):
    assert error(client.par(**params)) == (400, "invalid_request", expected)


def test_par_needs_the_atproto_scope_and_declared_scopes(client):
    assert error(client.par("transition:generic")) == (
        400,
        "invalid_scope",
        'The "atproto" scope is required',
    )
    assert error(client.par("atproto repo:app.bsky.feed.post")) == (
        400,
        "invalid_scope",
        'Scope "repo:app.bsky.feed.post" is not declared in the client metadata',
    )


def test_par_needs_the_client_assertion_signed_by_a_key_of_the_client(client):
    missing = client.post("/oauth/par", client.par_form(), assertion=None)
    assert error(missing) == (
        400,
        "invalid_request",
        'client authentication method "private_key_jwt" required a "client_assertion"',
    )
    stranger = jwk.JWK.generate(kty="EC", crv="P-256", kid="client-key-1")
    forged = client.post("/oauth/par", client.par_form(), assertion=client.assertion(stranger))
    assert error(forged) == (
        400,
        "invalid_client",
        'Validation of "client_assertion" failed: signature verification failed',
    )
    wrong_audience = client.post(
        "/oauth/par", client.par_form(), assertion=client.assertion(aud="https://x.example")
    )
    assert error(wrong_audience)[2] == (
        'Validation of "client_assertion" failed: unexpected "aud" claim value'
    )


def test_a_client_assertion_is_used_once(client):
    client.par()
    assertion = client.assertion()
    form = client.par_form()
    assert client.post("/oauth/par", form, assertion=assertion).status_code == 201
    again = client.post("/oauth/par", form, assertion=assertion)
    assert error(again) == (400, "invalid_grant", "private_key_jwt jti reused")


def test_granular_scopes_can_be_switched_off_like_an_older_pds(client, fakesky):
    fakesky.http.post("/_fake/oauth", json={"granular_scopes": False}).raise_for_status()
    assert error(client.par(f"atproto {BLOCKS}")) == (
        400,
        "invalid_scope",
        f'Scope "{BLOCKS}" is not supported by this server',
    )
    assert client.par("atproto transition:generic").status_code == 201


def test_client_metadata_is_validated_as_the_reference_does(client, fakesky):
    client.publish(dpop_bound_access_tokens=False)
    assert error(client.par()) == (
        400,
        "invalid_client_metadata",
        '"dpop_bound_access_tokens" must be true',
    )
    fakesky.configure(oauth_client_cache_s=0)
    client.publish(client_id="https://app.example.com/other.json")
    assert error(client.par())[1:] == ("invalid_client_metadata", "client_id does not match")
    client.publish(redirect_uris=["https://app.fake.test/callback"])
    assert error(client.par())[1:] == (
        "invalid_redirect_uri",
        'Redirect URI "https://app.fake.test/callback"\'s domain name must not be a local hostname',
    )
    client.publish()
    assert client.par().status_code == 201


def test_a_loopback_client_id_needs_the_test_only_leniency(fakesky, site):
    fakesky.configure(indexing_delay_s=0, login_min_ms=0)
    fakesky.account(HANDLE, PASSWORD)
    loopback_id = f"{site.url}/loopback-client.json"
    client = Client(fakesky.url, fakesky.url, site, client_id=loopback_id)
    callback = f"{site.url}/callback"  # http on loopback, for a web client: lenient too
    client.publish(jwks_uri=f"{site.url}/jwks.json", redirect_uris=[callback])
    assert error(client.par(redirect_uri=callback)) == (
        400,
        "invalid_client_metadata",
        f'Invalid client ID "{loopback_id}"',
    )
    fakesky.configure(oauth_allow_loopback_clients=True)
    request_uri = client.par(redirect_uri=callback).json()["request_uri"]
    answer = client.authorize(request_uri, HANDLE, PASSWORD)
    assert answer.headers["Location"].startswith(f"{callback}?")
    assert ("/loopback-client.json", site.url.split("//")[1]) in site.asked


def test_the_fetch_via_address_keeps_the_client_ids_host(client, site):
    client.par()
    assert ("/oauth-client-metadata.json", "app.example.com") in site.asked
    assert ("/jwks.json", "app.example.com") in site.asked


def test_the_fetch_via_an_https_address_names_the_client_and_trusts_any_certificate(
    client, fakesky
):
    tls_site = ClientSite(tls=True)
    try:
        client.site = tls_site
        client.publish()
        fakesky.configure(oauth_client_fetch_via=tls_site.url)
        assert client.par().status_code == 201
        assert "app.example.com" in tls_site.server_names  # TLS SNI: the client_id's name
        assert ("/jwks.json", "app.example.com") in tls_site.asked
    finally:
        tls_site.close()


def test_without_fetch_via_a_client_certificate_is_checked(fakesky, site):
    tls_site = ClientSite(tls=True)
    try:
        fakesky.configure(oauth_allow_loopback_clients=True, login_min_ms=0)
        fakesky.account(HANDLE, PASSWORD)
        client_id = f"{tls_site.url}/client.json"
        client = Client(fakesky.url, fakesky.url, tls_site, client_id=client_id)
        client.publish(jwks_uri=f"{tls_site.url}/jwks.json")
        refused = client.par()
        assert refused.status_code == 400
        assert refused.json()["error"] == "invalid_client_metadata"
        assert "CERTIFICATE_VERIFY_FAILED" in refused.json()["error_description"]
    finally:
        tls_site.close()


# -- the authorize page ----------------------------------------------------------------------------


def page_of(client, request_uri):
    return client.http.get(
        "/oauth/authorize", params={"client_id": CLIENT_ID, "request_uri": request_uri}
    )


def test_the_page_shows_the_client_and_the_scopes_and_prefills_the_hint(client):
    request_uri = client.par(f"atproto {BLOCKS}", login_hint=HANDLE).json()["request_uri"]
    page = page_of(client, request_uri)
    assert page.status_code == 200
    assert "app.example.com" in page.text
    assert "Create records of app.bsky.graph.block" in page.text
    assert f'id="username" name="username" autocomplete="username" value="{HANDLE}"' in page.text
    for element in ('id="password"', 'id="approve"', 'id="deny"'):
        assert element in page.text


def test_a_wrong_password_shows_the_form_again(client):
    request_uri = client.par().json()["request_uri"]
    answer = client.authorize(request_uri, HANDLE, "wrong")
    assert answer.status_code == 400
    assert "Invalid identifier or password" in answer.text
    assert client.authorize(request_uri, HANDLE, PASSWORD).status_code == 303  # still open


def test_deny_and_approve_redirect_with_state_and_iss(client, fakesky):
    state = "s-1"
    denied = client.authorize(
        client.par(state=state).json()["request_uri"], HANDLE, PASSWORD, "deny"
    )
    assert denied.status_code == 303
    query = parse_qs(urlsplit(denied.headers["Location"]).query)
    assert query == {
        "iss": [fakesky.url],
        "state": [state],
        "error": ["access_denied"],
        "error_description": ["The user rejected the request"],
    }
    approved = client.authorize(client.par(state=state).json()["request_uri"], HANDLE, PASSWORD)
    location = urlsplit(approved.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    query = parse_qs(location.query)
    assert (query["iss"], query["state"]) == ([fakesky.url], [state])
    assert query["code"][0].startswith("cod-")


def test_a_request_uri_is_single_use_and_expires(client, fakesky):
    request_uri = client.par().json()["request_uri"]
    assert client.authorize(request_uri, HANDLE, PASSWORD).status_code == 303
    again = page_of(client, request_uri)
    assert parse_qs(urlsplit(again.headers["Location"]).query)["error_description"] == [
        "This request was already authorized"
    ]
    fakesky.configure(oauth_par_ttl_s=0.2)
    request_uri = client.par().json()["request_uri"]
    time.sleep(0.3)
    late = page_of(client, request_uri)
    assert parse_qs(urlsplit(late.headers["Location"]).query)["error_description"] == [
        "This request has expired"
    ]
    assert page_of(client, request_uri).status_code == 400  # gone: "Unknown request_uri"


# -- tokens ----------------------------------------------------------------------------------


def test_the_token_response_is_the_reference_s(client, fakesky):
    tokens = client.login(HANDLE, PASSWORD, "atproto transition:generic")
    did = fakesky.did(HANDLE)
    assert tokens["token_type"] == "DPoP"
    assert tokens["sub"] == did
    assert tokens["scope"] == "atproto transition:generic"
    assert 3595 <= tokens["expires_in"] <= 3600  # TOKEN_MAX_AGE
    assert tokens["refresh_token"].startswith("ref-")
    claims = claims_of(tokens["access_token"])
    assert claims["sub"] == did
    assert claims["iss"] == fakesky.url
    assert claims["aud"] == "did:web:fakesky.test"
    assert claims["client_id"] == CLIENT_ID
    assert claims["jti"].startswith("tok-")
    assert claims["cnf"]["jkt"]
    assert "scope" not in claims  # stateful mode (pds/src/context.ts)


def test_pkce_is_checked_at_the_token_endpoint(client):
    code = client.code(HANDLE, PASSWORD)
    wrong = client.tokens(code, verifier=pkce()[0])
    assert error(wrong) == (400, "invalid_grant", "Invalid code_verifier")


def test_a_code_is_used_once_and_its_reuse_revokes_the_grant(client):
    code = client.code(HANDLE, PASSWORD)
    tokens = client.tokens(code).json()
    assert (
        client.xrpc("GET", "com.atproto.server.getSession", tokens["access_token"]).status_code
        == 200
    )
    again = client.tokens(code)
    assert error(again) == (400, "invalid_grant", "Invalid code")
    after = client.xrpc("GET", "com.atproto.server.getSession", tokens["access_token"])
    assert xrpc_error(after) == (401, "invalid_token", "Invalid token")


def test_the_token_request_needs_the_par_s_dpop_key(client):
    code = client.code(HANDLE, PASSWORD)
    client.dpop_key = jwk.JWK.generate(kty="EC", crv="P-256")
    answer = client.tokens(code)
    assert error(answer) == (400, "invalid_grant", "DPoP proof does not match the expected JKT")


def test_the_token_request_needs_a_proof(client):
    code = client.code(HANDLE, PASSWORD)
    answer = client.post(
        "/oauth/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": client.verifier,
        },
        proof=None,
    )
    assert error(answer) == (401, "invalid_dpop_proof", "DPoP proof required")


def test_refresh_rotates_and_a_replayed_refresh_token_revokes_the_grant(client):
    first = client.login(HANDLE, PASSWORD)
    second = client.refresh(first["refresh_token"]).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    session = "com.atproto.server.getSession"
    # The old access token stopped working with the refresh (a new token id).
    assert client.xrpc("GET", session, first["access_token"]).status_code == 401
    assert client.xrpc("GET", session, second["access_token"]).status_code == 200
    replayed = client.refresh(first["refresh_token"])
    assert error(replayed) == (400, "invalid_grant", "Refresh token replayed")
    # token-manager.ts consumeRefreshToken: the whole grant is gone.
    assert error(client.refresh(second["refresh_token"])) == (
        400,
        "invalid_grant",
        "Invalid refresh token",
    )
    assert xrpc_error(client.xrpc("GET", session, second["access_token"]))[:2] == (
        401,
        "invalid_token",
    )


def test_a_refresh_with_another_dpop_key_revokes_the_grant(client):
    tokens = client.login(HANDLE, PASSWORD)
    client.dpop_key = jwk.JWK.generate(kty="EC", crv="P-256")
    assert error(client.refresh(tokens["refresh_token"]))[2] == (
        "DPoP proof does not match the expected JKT"
    )
    assert error(client.refresh(tokens["refresh_token"]))[2] == "Invalid refresh token"


def test_revocation_ends_the_grant_and_answers_200_for_anything(client):
    tokens = client.login(HANDLE, PASSWORD)
    assert client.revoke("ref-" + "0" * 64).json() == {}  # unknown: 200 all the same
    answer = client.revoke(tokens["refresh_token"])
    assert (answer.status_code, answer.json()) == (200, {})
    call = client.xrpc("GET", "com.atproto.server.getSession", tokens["access_token"])
    assert xrpc_error(call) == (401, "invalid_token", "Invalid token")
    assert error(client.refresh(tokens["refresh_token"]))[2] == "Invalid refresh token"


def test_revoking_the_access_token_revokes_the_grant(client):
    tokens = client.login(HANDLE, PASSWORD)
    assert client.revoke(tokens["access_token"]).status_code == 200
    assert error(client.refresh(tokens["refresh_token"]))[2] == "Invalid refresh token"


# -- the resource server -----------------------------------------------------------------


def test_xrpc_asks_for_its_nonce_with_a_401_challenge(client):
    tokens = client.login(HANDLE, PASSWORD)
    client.nonce = None
    answer = client.xrpc(
        "GET",
        "com.atproto.server.getSession",
        tokens["access_token"],
        proof=client.proof(
            "GET", "/xrpc/com.atproto.server.getSession", nonce=None, token=tokens["access_token"]
        ),
    )
    assert xrpc_error(answer) == (
        401,
        "use_dpop_nonce",
        "Authorization server requires nonce in DPoP proof",
    )
    assert answer.headers["WWW-Authenticate"] == (
        'DPoP algs="RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES256K ES384 ES512",'
        ' error="use_dpop_nonce", error_description="Authorization server requires nonce in DPoP'
        ' proof"'
    )
    assert answer.headers["DPoP-Nonce"]
    again = client.xrpc("GET", "com.atproto.server.getSession", tokens["access_token"])
    assert again.status_code == 200
    assert again.headers["DPoP-Nonce"]


def test_a_rotated_nonce_is_refused(client, fakesky):
    tokens = client.login(HANDLE, PASSWORD)
    fakesky.http.post("/_fake/oauth", json={"nonce_rotate": True}).raise_for_status()
    path = "/xrpc/com.atproto.server.getSession"
    stale = client.proof("GET", path, token=tokens["access_token"])
    answer = client.xrpc(
        "GET", "com.atproto.server.getSession", tokens["access_token"], proof=stale
    )
    assert xrpc_error(answer) == (401, "use_dpop_nonce", 'DPoP "nonce" mismatch')
    # A value holding a double quote is left out of the challenge (www-authenticate-error.ts).
    assert answer.headers["WWW-Authenticate"].endswith('error="use_dpop_nonce"')


def test_xrpc_refuses_a_token_without_its_proof_or_with_a_wrong_ath(client):
    tokens = client.login(HANDLE, PASSWORD)
    token = tokens["access_token"]
    bare = client.xrpc("GET", "com.atproto.server.getSession", token, proof=None)
    assert xrpc_error(bare) == (401, "invalid_dpop_proof", "DPoP proof required")
    path = "/xrpc/com.atproto.server.getSession"
    wrong_ath = client.proof("GET", path, token=token + "x")
    answer = client.xrpc("GET", "com.atproto.server.getSession", token, proof=wrong_ath)
    assert xrpc_error(answer) == (401, "invalid_dpop_proof", 'DPoP "ath" mismatch')
    other_key = jwk.JWK.generate(kty="EC", crv="P-256")
    unbound = client.proof("GET", path, token=token, key=other_key)
    answer = client.xrpc("GET", "com.atproto.server.getSession", token, proof=unbound)
    assert xrpc_error(answer) == (401, "invalid_token", "Invalid DPoP key binding")


def test_an_expired_access_token_is_refused_and_a_refresh_brings_a_new_one(client, fakesky):
    tokens = client.login(HANDLE, PASSWORD)
    fakesky.http.post("/_fake/oauth", json={"expire_access_tokens": True}).raise_for_status()
    answer = client.xrpc("GET", "com.atproto.server.getSession", tokens["access_token"])
    assert xrpc_error(answer) == (401, "invalid_token", '"exp" claim timestamp check failed')
    assert 'error="invalid_token"' in answer.headers["WWW-Authenticate"]
    fresh = client.refresh(tokens["refresh_token"]).json()
    assert (
        client.xrpc("GET", "com.atproto.server.getSession", fresh["access_token"]).status_code
        == 200
    )


def test_the_access_token_lifetime_is_a_setting(client, fakesky):
    fakesky.configure(oauth_access_token_ttl_s=1)
    tokens = client.login(HANDLE, PASSWORD)
    assert tokens["expires_in"] <= 1
    time.sleep(1.1)
    answer = client.xrpc("GET", "com.atproto.server.getSession", tokens["access_token"])
    assert xrpc_error(answer) == (401, "invalid_token", '"exp" claim timestamp check failed')


def test_an_oauth_token_acts_for_its_subject(client, fakesky):
    tokens = client.login(HANDLE, PASSWORD)
    did = tokens["sub"]
    made = client.xrpc(
        "POST",
        "com.atproto.repo.createRecord",
        tokens["access_token"],
        body=block_body(client, did),
    )
    assert made.status_code == 200, made.text
    assert fakesky.state(HANDLE)["block_count"] == 1
    someone_else = fakesky.account("bob.fake.test", "bob-pass")["did"]
    theirs = client.xrpc(
        "POST",
        "com.atproto.repo.createRecord",
        tokens["access_token"],
        body=block_body(client, someone_else),
    )
    assert xrpc_error(theirs)[:2] == (401, "AuthenticationRequired")


def test_scopes_are_enforced_as_the_reference_enforces_them(client, fakesky):
    tokens = client.login(HANDLE, PASSWORD, f"atproto {BLOCKS}")
    token, did = tokens["access_token"], tokens["sub"]
    made = client.xrpc("POST", "com.atproto.repo.createRecord", token, body=block_body(client, did))
    assert made.status_code == 200
    rkey = made.json()["uri"].rsplit("/", 1)[1]
    gone = client.xrpc(
        "POST",
        "com.atproto.repo.deleteRecord",
        token,
        body={"repo": did, "collection": BLOCK, "rkey": rkey},
    )
    assert xrpc_error(gone) == (
        403,
        "ScopeMissingError",
        'Missing required scope "repo:app.bsky.graph.block?action=delete"',
    )
    batch = client.xrpc(
        "POST",
        "com.atproto.repo.applyWrites",
        token,
        body={"repo": did, "writes": [create("did:plc:ewvi7nxzyoun6zhxrhs64oiz"), delete(rkey)]},
    )
    assert (
        xrpc_error(batch)[2] == 'Missing required scope "repo:app.bsky.graph.block?action=delete"'
    )
    mute = client.xrpc(
        "POST", "app.bsky.graph.muteActor", token, body={"actor": "crowd-5.fake.test"}
    )
    assert xrpc_error(mute) == (
        403,
        "ScopeMissingError",
        f'Missing required scope "rpc:app.bsky.graph.muteActor?aud={APPVIEW}"',
    )
    assert fakesky.state(HANDLE)["block_count"] == 1
    assert fakesky.http.get("/_fake/oauth").json()["scope_refusals"] == 3


def test_an_rpc_scope_allows_its_method_at_its_audience(client):
    tokens = client.login(HANDLE, PASSWORD, f"atproto {MUTE}")
    token = tokens["access_token"]
    mute = client.xrpc(
        "POST", "app.bsky.graph.muteActor", token, body={"actor": "crowd-5.fake.test"}
    )
    assert mute.status_code == 200
    elsewhere = client.xrpc(
        "POST",
        "app.bsky.graph.muteActor",
        token,
        body={"actor": "crowd-5.fake.test"},
        headers={"atproto-proxy": "did:web:other.example#bsky_appview"},
    )
    assert elsewhere.status_code == 403
    unmute = client.xrpc(
        "POST", "app.bsky.graph.unmuteActor", token, body={"actor": "crowd-5.fake.test"}
    )
    assert unmute.status_code == 403


def test_the_appview_did_is_a_setting(client, fakesky):
    fakesky.configure(appview_did="did:web:appview.example.org")
    tokens = client.login(HANDLE, PASSWORD, f"atproto {MUTE}")
    mute = client.xrpc(
        "POST",
        "app.bsky.graph.muteActor",
        tokens["access_token"],
        body={"actor": "crowd-5.fake.test"},
    )
    assert xrpc_error(mute)[2] == (
        'Missing required scope "rpc:app.bsky.graph.muteActor?aud='
        'did:web:appview.example.org%23bsky_appview"'
    )


def test_rate_limits_count_oauth_calls_as_app_password_ones(client, fakesky):
    fakesky.configure(write_points_per_hour=6)
    tokens = client.login(HANDLE, PASSWORD)
    token, did = tokens["access_token"], tokens["sub"]
    codes = [
        client.xrpc(
            "POST", "com.atproto.repo.createRecord", token, body=block_body(client, did)
        ).status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 429]
    state = fakesky.state(HANDLE)
    assert state["refused_by"] == {"repo-write-hour": 1}
    fakesky.configure(ip_requests_per_window=2)
    reads = [
        client.xrpc("GET", "app.bsky.actor.getProfile", token, params={"actor": HANDLE}).status_code
        for _ in range(2)
    ]
    assert reads[-1] == 429  # the per-address limit, spent before the token is even read


def test_an_oauth_token_is_no_bearer_token_and_app_passwords_still_work(client, fakesky, xrpc):
    tokens = client.login(HANDLE, PASSWORD)
    bearer = xrpc.get("com.atproto.server.getSession", token=tokens["access_token"])
    assert (bearer.status_code, bearer.json()) == (
        400,
        {"error": "InvalidToken", "message": "Malformed token"},
    )
    assert xrpc.login(HANDLE).status_code == 200
    assert xrpc.get("com.atproto.server.getSession").status_code == 200
    refresh = client.xrpc("POST", "com.atproto.server.refreshSession", tokens["access_token"])
    assert xrpc_error(refresh)[:2] == (401, "AuthMissing")


def test_reset_forgets_every_grant(client, fakesky):
    tokens = client.login(HANDLE, PASSWORD)
    assert fakesky.state()["totals"]["oauth"]["grants_live"] == 1
    fakesky.http.post("/_fake/reset").raise_for_status()
    assert fakesky.http.get("/_fake/oauth").json()["grants_live"] == 0
    fakesky.configure(oauth_client_fetch_via=client.site.url, login_min_ms=0)
    fakesky.account(HANDLE, PASSWORD)
    client.par()  # a fresh nonce from the new secret
    assert error(client.refresh(tokens["refresh_token"]))[2] == "Invalid refresh token"


def test_sign_in_takes_the_reference_floor(client, fakesky):
    fakesky.configure(login_min_ms=350)
    request_uri = client.par().json()["request_uri"]
    started = time.monotonic()
    assert client.authorize(request_uri, HANDLE, "wrong").status_code == 400
    assert time.monotonic() - started >= 0.35


def test_grants_survive_a_restart_from_the_state_file(client, fakesky_server, tmp_path):
    tokens = client.login(HANDLE, PASSWORD)
    server, _ = fakesky_server
    path = tmp_path / "state.pickle"
    server.fake.save(path)
    restored = FakeBluesky.restore(path, server.fake._initial_config)
    grant = restored.oauth.grants[claims_of(tokens["access_token"])["jti"]]
    assert grant.refresh_token == tokens["refresh_token"]
    assert restored.oauth.fake is restored
