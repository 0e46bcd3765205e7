"""Faults on demand: failures, stalls, answers lost after a write, revoked passwords and
accounts taken down (pds/src/auth-verifier.ts findAccount for the last)."""

import time

import httpx
import pytest

from fakesky.tests.conftest import PASSWORD, create


def test_the_next_calls_answer_a_server_error_then_work_again(fakesky, alice):
    fakesky.faults(fail_status=502, fail_count=2)
    statuses = [alice.get("app.bsky.graph.getBlocks").status_code for _ in range(3)]
    assert statuses == [502, 502, 200]
    assert fakesky.state()["totals"]["faults"]["injected"] == 2


def test_faults_can_be_aimed_at_some_methods(fakesky, alice):
    fakesky.faults(fail_status=503, fail_count=1, only=["com.atproto.repo.applyWrites"])
    assert alice.get("app.bsky.graph.getBlocks").status_code == 200
    refused = alice.apply(create(fakesky.did("crowd-5.fake.test")))
    assert refused.status_code == 503
    assert fakesky.state("alice.fake.test")["block_count"] == 0


def test_a_stalled_call_answers_late(fakesky, alice):
    fakesky.faults(stall_s=1.0, stall_count=1)
    started = time.monotonic()
    assert alice.get("app.bsky.graph.getBlocks").status_code == 200
    assert time.monotonic() - started >= 1.0
    started = time.monotonic()
    alice.get("app.bsky.graph.getBlocks")
    assert time.monotonic() - started < 1.0


def test_a_dropped_answer_leaves_the_write_applied(fakesky, alice):
    fakesky.faults(drop_count=1)
    with pytest.raises(httpx.TransportError):
        alice.apply(create(fakesky.did("crowd-5.fake.test")))
    assert fakesky.state("alice.fake.test")["block_count"] == 1


def test_a_taken_down_account_can_neither_sign_in_nor_write(fakesky, alice):
    fakesky.set_status("alice.fake.test", "takendown")
    write = alice.apply(create(fakesky.did("crowd-5.fake.test")))
    assert write.status_code == 401
    assert write.json() == {"error": "AccountTakedown", "message": "Account has been taken down"}
    # An app password cannot sign in to a taken-down account (account-manager.ts login()).
    assert alice.login("alice.fake.test").status_code == 401
    refresh = alice.post("com.atproto.server.refreshSession", token=alice.session["refreshJwt"])
    assert (refresh.status_code, refresh.json()["error"]) == (401, "AccountTakedown")


def test_a_deactivated_account_signs_in_but_cannot_write(fakesky, alice):
    fakesky.set_status("alice.fake.test", "deactivated")
    session = alice.login("alice.fake.test").json()
    assert (session["active"], session["status"]) == (False, "deactivated")
    write = alice.apply(create(fakesky.did("crowd-5.fake.test")))
    assert (write.status_code, write.json()["error"]) == (401, "AccountDeactivated")
    fakesky.set_status("alice.fake.test", "active")
    assert alice.apply(create(fakesky.did("crowd-5.fake.test"))).status_code == 200


def test_revoking_then_making_a_new_app_password(fakesky, alice):
    fakesky.revoke("alice.fake.test")
    assert alice.login("alice.fake.test").status_code == 401
    fakesky.account("alice.fake.test", "new-" + PASSWORD)
    assert alice.login("alice.fake.test", "new-" + PASSWORD).status_code == 200
