"""Repository writes with the reference PDS's semantics (pds/src/api/com/atproto/repo/*.ts,
pds/src/repo/prepare.ts, repo/src/mst/mst.ts)."""

import pytest

from fakesky.tests.conftest import BLOCK, PASSWORD, Xrpc, create, delete, now_iso, rkey_of

INTERNAL = {"error": "InternalServerError", "message": "Internal Server Error"}
TID = "3kzzzzzzzzz22"


@pytest.fixture
def crowd(fakesky):
    return [fakesky.did(f"f{i}.crowd-50.fake.test") for i in range(50)]


def test_create_get_list_and_delete_one_block(alice, crowd):
    created = alice.block(crowd[0])
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["uri"].startswith(f"at://{alice.did}/{BLOCK}/")
    assert body["cid"].startswith("bafyrei")
    assert body["validationStatus"] == "valid"
    assert set(body["commit"]) == {"cid", "rev"}
    rkey = rkey_of(body["uri"])
    record = alice.get(
        "com.atproto.repo.getRecord", token=None, repo=alice.did, collection=BLOCK, rkey=rkey
    ).json()
    assert record["value"]["subject"] == crowd[0]
    deleted = alice.post(
        "com.atproto.repo.deleteRecord", {"repo": alice.did, "collection": BLOCK, "rkey": rkey}
    )
    assert "commit" in deleted.json()
    missing = alice.get("com.atproto.repo.getRecord", repo=alice.did, collection=BLOCK, rkey=rkey)
    assert missing.status_code == 400
    assert missing.json()["error"] == "RecordNotFound"


def test_deleting_a_missing_record_succeeds_without_a_commit(fakesky, alice):
    response = alice.post(
        "com.atproto.repo.deleteRecord", {"repo": alice.did, "collection": BLOCK, "rkey": TID}
    )
    assert response.status_code == 200
    assert response.json() == {}
    assert fakesky.state("alice.fake.test")["write_calls"] == 1


def test_list_records_is_newest_first_and_pages_by_rkey(alice, crowd):
    uris = [r["uri"] for r in alice.apply(*(create(did) for did in crowd[:5])).json()["results"]]
    first = alice.get(
        "com.atproto.repo.listRecords", repo=alice.did, collection=BLOCK, limit=3
    ).json()
    assert [r["uri"] for r in first["records"]] == uris[::-1][:3]
    rest = alice.get(
        "com.atproto.repo.listRecords",
        repo=alice.did,
        collection=BLOCK,
        limit=3,
        cursor=first["cursor"],
    ).json()
    assert [r["uri"] for r in rest["records"]] == uris[::-1][3:]
    reverse = alice.get(
        "com.atproto.repo.listRecords", repo=alice.did, collection=BLOCK, reverse="true"
    ).json()
    assert [r["uri"] for r in reverse["records"]] == uris


def test_apply_writes_fails_whole_when_one_delete_finds_no_record(fakesky, alice, crowd):
    kept = rkey_of(alice.block(crowd[0]).json()["uri"])
    response = alice.apply(create(crowd[1]), delete(kept), delete(TID))
    assert response.status_code == 500
    assert response.json() == INTERNAL
    state = fakesky.state("alice.fake.test")
    assert state["blocked"] == [crowd[0]]  # neither the create nor the first delete happened


def test_apply_writes_fails_whole_when_a_create_names_an_existing_rkey(fakesky, alice, crowd):
    assert alice.apply(create(crowd[0], rkey=TID)).status_code == 200
    response = alice.apply(create(crowd[1]), create(crowd[2], rkey=TID))
    assert response.status_code == 500
    assert fakesky.state("alice.fake.test")["blocked"] == [crowd[0]]


def test_apply_writes_refuses_more_than_200_writes(fakesky, alice, crowd):
    response = alice.apply(*(create(crowd[i % 50]) for i in range(201)))
    assert response.status_code == 400
    assert response.json() == {"error": "InvalidRequest", "message": "Too many writes. Max: 200"}
    assert alice.apply(*(create(crowd[i % 50]) for i in range(200))).status_code == 200
    # applyWrites does not replace earlier blocks of a subject: 150 duplicates.
    state = fakesky.state("alice.fake.test")
    assert (state["block_count"], state["distinct_blocked"], state["duplicates"]) == (200, 50, 150)


def test_create_record_replaces_an_earlier_block_of_the_same_subject(fakesky, alice, crowd):
    alice.apply(create(crowd[0]), create(crowd[0]))
    alice.block(crowd[0])
    state = fakesky.state("alice.fake.test")
    assert (state["block_count"], state["duplicates"]) == (1, 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"subject": "alice"},
            "Invalid app.bsky.graph.block record: Record/subject must be a valid did",
        ),
        (
            {"createdAt": "yesterday"},
            "Invalid app.bsky.graph.block record: Record/createdAt datetime is not in a valid",
        ),
        (
            {"createdAt": "2026-01-01T00:00:00-00:00"},
            'datetime can not use "-00:00" for UTC timezone',
        ),
        ({"createdAt": None}, 'Record must have the property "createdAt"'),
        (
            {"$type": "app.bsky.graph.follow"},
            "Invalid $type: expected app.bsky.graph.block, got app.bsky.graph.follow",
        ),
    ],
)
def test_invalid_records_are_refused(alice, crowd, change, message):
    record = {"$type": BLOCK, "subject": crowd[0], "createdAt": now_iso(), **change}
    record = {k: v for k, v in record.items() if v is not None}
    for response in (
        alice.post(
            "com.atproto.repo.createRecord",
            {"repo": alice.did, "collection": BLOCK, "record": record},
        ),
        alice.apply(
            {"$type": "com.atproto.repo.applyWrites#create", "collection": BLOCK, "value": record}
        ),
    ):
        assert response.status_code == 400
        assert response.json()["error"] == "InvalidRequest"
        assert message in response.json()["message"]


def test_a_callers_rkey_must_be_a_tid(alice, crowd):
    response = alice.block(crowd[0], rkey="not-a-tid")
    assert response.status_code == 400
    assert "Invalid record key for app.bsky.graph.block" in response.json()["message"]
    assert alice.block(crowd[0], rkey=TID).status_code == 200


def test_validate_false_skips_record_validation(alice):
    record = {"$type": BLOCK, "subject": "whoever", "createdAt": "yesterday"}
    response = alice.post(
        "com.atproto.repo.createRecord",
        {"repo": alice.did, "collection": BLOCK, "record": record, "validate": False},
    )
    assert response.status_code == 200
    assert "validationStatus" not in response.json()


def test_writes_go_only_to_ones_own_repo(fakesky, alice, crowd):
    fakesky.account("bob.fake.test", PASSWORD)
    bob = Xrpc(fakesky.url)
    bob.login("bob.fake.test")
    response = bob.post(
        "com.atproto.repo.applyWrites", {"repo": alice.did, "writes": [create(crowd[0])]}
    )
    assert response.status_code == 401
    assert fakesky.state("alice.fake.test")["block_count"] == 0


def test_a_wrong_http_method_or_an_unknown_method_is_refused(alice):
    assert alice.get("com.atproto.repo.applyWrites").status_code == 400
    unknown = alice.get("app.bsky.feed.getTimeline")
    assert unknown.status_code == 501
    assert unknown.json()["error"] == "MethodNotImplemented"
