"""Sessions as the reference PDS makes them (account-manager/helpers/auth.ts, auth-verifier.ts,
api/com/atproto/server/createSession.ts and refreshSession.ts)."""

import base64
import json
import re
import time

from fakesky.tests.conftest import PASSWORD


def claims(token):
    header, payload, _ = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return decode(header), decode(payload)


def test_session_tokens_are_hs256_jwts_with_the_reference_claims(alice):
    header, access = claims(alice.session["accessJwt"])
    assert header == {"typ": "at+jwt", "alg": "HS256"}
    assert access["sub"] == alice.did
    assert access["scope"] == "com.atproto.appPass"
    assert access["exp"] - access["iat"] == 7200
    header, refresh = claims(alice.session["refreshJwt"])
    assert header == {"typ": "refresh+jwt", "alg": "HS256"}
    assert refresh["scope"] == "com.atproto.refresh"
    assert refresh["jti"]
    assert refresh["exp"] - refresh["iat"] == 90 * 86400


def test_create_session_returns_a_did_doc_naming_the_fake_as_the_pds(alice, fakesky):
    assert re.fullmatch(r"did:plc:[a-z2-7]{24}", alice.did)
    doc = alice.session["didDoc"]
    assert doc["id"] == alice.did
    assert doc["alsoKnownAs"] == ["at://alice.fake.test"]
    assert {
        "id": "#atproto_pds",
        "type": "AtprotoPersonalDataServer",
        "serviceEndpoint": fakesky.url,
    } in doc["service"]


def test_the_did_doc_names_the_public_url_when_one_is_set(fakesky, xrpc):
    fakesky.configure(public_url="https://pds.example.test")
    fakesky.account("alice.fake.test", PASSWORD)
    doc = xrpc.login("alice.fake.test").json()["didDoc"]
    assert doc["service"][0]["serviceEndpoint"] == "https://pds.example.test"


def test_sign_in_takes_the_reference_floor_of_350_ms(fakesky, xrpc):
    fakesky.account("alice.fake.test", PASSWORD)
    started = time.monotonic()
    assert xrpc.login("alice.fake.test", "wrong").status_code == 401
    assert time.monotonic() - started >= 0.35


def test_a_wrong_password_is_401(fakesky, xrpc):
    fakesky.account("alice.fake.test", PASSWORD)
    response = xrpc.login("alice.fake.test", "wrong")
    assert response.status_code == 401
    assert response.json() == {
        "error": "AuthenticationRequired",
        "message": "Invalid identifier or password",
    }


def test_an_expired_access_token_is_400_expired_token(fakesky, alice):
    fakesky.configure(access_token_ttl_s=1)
    alice.login("alice.fake.test")
    time.sleep(2.05)
    response = alice.get("app.bsky.actor.getProfile", actor="alice.fake.test")
    assert response.status_code == 400
    assert response.json() == {"error": "ExpiredToken", "message": "Token has expired"}


def test_a_tampered_token_is_400_invalid_token(alice):
    header, _, signature = alice.session["accessJwt"].split(".")
    forged = (
        base64.urlsafe_b64encode(
            json.dumps(
                {**claims(alice.session["accessJwt"])[1], "sub": "did:plc:" + "a" * 24}
            ).encode()
        )
        .decode()
        .rstrip("=")
    )
    response = alice.get("app.bsky.graph.getBlocks", token=f"{header}.{forged}.{signature}")
    assert response.status_code == 400
    assert response.json()["error"] == "InvalidToken"
    refresh = alice.get("app.bsky.graph.getBlocks", token=alice.session["refreshJwt"])
    assert refresh.json()["error"] == "InvalidToken"


def test_refresh_gives_new_tokens_and_a_used_token_keeps_working_for_a_grace_period(alice):
    used = alice.session["refreshJwt"]
    first = alice.post("com.atproto.server.refreshSession", token=used)
    second = alice.post("com.atproto.server.refreshSession", token=used)
    assert first.status_code == second.status_code == 200
    # Two workers refreshing the same stored session both go on, with the same next token id.
    assert (
        claims(first.json()["refreshJwt"])[1]["jti"]
        == claims(second.json()["refreshJwt"])[1]["jti"]
    )
    assert first.json()["didDoc"]["id"] == alice.did
    renewed = alice.get("app.bsky.graph.getBlocks", token=first.json()["accessJwt"])
    assert renewed.status_code == 200


def test_a_used_refresh_token_stops_working_after_the_grace_period(fakesky, alice):
    fakesky.configure(refresh_grace_s=1)
    used = alice.session["refreshJwt"]
    assert alice.post("com.atproto.server.refreshSession", token=used).status_code == 200
    time.sleep(1.1)
    response = alice.post("com.atproto.server.refreshSession", token=used)
    assert response.status_code == 400
    assert response.json() == {"error": "ExpiredToken", "message": "Token has been revoked"}


def test_a_revoked_app_password_fails_sign_in_and_refresh_but_not_a_live_access_token(
    fakesky, alice
):
    fakesky.revoke("alice.fake.test")
    assert alice.login("alice.fake.test").status_code == 401
    refresh = alice.post("com.atproto.server.refreshSession", token=alice.session["refreshJwt"])
    assert refresh.status_code == 400
    assert refresh.json() == {"error": "ExpiredToken", "message": "Token has been revoked"}
    # Access tokens are not checked against the app password: they live out their time.
    assert alice.get("app.bsky.graph.getBlocks").status_code == 200


def test_a_call_without_a_token_is_401_auth_missing(alice):
    response = alice.get("app.bsky.graph.getBlocks", token=None)
    assert response.status_code == 401
    assert response.json()["error"] == "AuthMissing"


def test_get_session_and_resolve_handle(alice, fakesky):
    session = alice.get("com.atproto.server.getSession").json()
    assert (session["did"], session["handle"], session["active"]) == (
        alice.did,
        "alice.fake.test",
        True,
    )
    resolved = alice.get(
        "com.atproto.identity.resolveHandle", token=None, handle="crowd-5.fake.test"
    )
    assert resolved.json()["did"] == fakesky.did("crowd-5.fake.test")
    unknown = alice.get("com.atproto.identity.resolveHandle", handle="nobody.example.org")
    assert unknown.status_code == 400
