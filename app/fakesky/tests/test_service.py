"""python3 -m fakesky as a service: every setting a flag, seeded accounts and targets, and the
/_fake/state report."""

import subprocess
import sys
from dataclasses import fields

import httpx
from conftest import APP_DIR, free_port, wait_until

from fakesky.config import Config
from fakesky.tests.conftest import PASSWORD, Xrpc, create


def test_every_setting_is_a_flag():
    usage = subprocess.run(
        [sys.executable, "-m", "fakesky", "--help"],
        cwd=APP_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for setting in fields(Config):
        assert "--" + setting.name.replace("_", "-") in usage
    for flag in ("--host", "--port", "--account", "--target", "--accounts", "--latency-ms"):
        assert flag in usage


def test_the_service_starts_with_seeds_and_settings_and_keeps_them_across_resets():
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fakesky",
            "--port",
            str(port),
            "--account",
            "me.fake.test:pass:with:colons",
            "--target",
            "troll.example.org:5000",
            "--target",
            "crowd:70",
            "--accounts",
            "3",
            "--write-points-per-hour",
            "9",
            "--no-rate-limits-enabled",
            "--indexing-delay-s",
            "0",
        ],
        cwd=APP_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        http = httpx.Client(base_url=url, timeout=5)
        wait_until(lambda: _answers(http), 10, message="python -m fakesky")
        http.post("/_fake/reset").raise_for_status()
        config = http.get("/_fake/config").json()
        assert (config["write_points_per_hour"], config["rate_limits_enabled"]) == (9, False)
        state = http.get("/_fake/state").json()
        handles = {a["handle"] for a in state["accounts"]}
        assert handles == {"me.fake.test", "user1.fake.test", "user2.fake.test", "user3.fake.test"}
        assert state["targets"][0]["handle"] == "troll.example.org"
        me = Xrpc(url)
        assert me.login("me.fake.test", "pass:with:colons").status_code == 200
        page = me.get("app.bsky.graph.getFollowers", actor="troll.example.org", limit=2).json()
        assert page["subject"]["did"] == state["targets"][0]["did"]
        assert [f["handle"] for f in page["followers"]] == [
            "f0.troll.example.org",
            "f1.troll.example.org",
        ]
        assert me.get("app.bsky.actor.getProfile", actor="crowd-70.fake.test").status_code == 200
    finally:
        process.terminate()
        process.wait(10)
    assert "troll.example.org" in process.stdout.read()


def _answers(http):
    try:
        return http.get("/_fake/config").status_code == 200
    except httpx.TransportError:
        return False


def test_state_reports_per_account_and_totals(fakesky, alice):
    fakesky.configure(write_points_per_hour=6)
    target = fakesky.did("crowd-5.fake.test")
    alice.apply(create(target), create(target))
    alice.apply(create(target))
    fakesky.account("bob.fake.test", PASSWORD)
    state = fakesky.state()
    by_handle = {a["handle"]: a for a in state["accounts"]}
    alice_state = by_handle["alice.fake.test"]
    assert alice_state["block_count"] == 2
    assert alice_state["duplicates"] == 1
    assert alice_state["writes_refused"] == 1
    assert alice_state["rate_limited"] == 1
    assert by_handle["bob.fake.test"]["block_count"] == 0
    totals = state["totals"]
    assert (totals["blocks"], totals["duplicates"], totals["rate_limited"]) == (2, 1, 1)


def test_bad_settings_are_refused_naming_the_setting(fakesky):
    response = fakesky.http.post("/_fake/config", json={"hour_window_s": 0})
    assert response.status_code == 400
    assert "hour_window_s" in response.json()["message"]
    response = fakesky.http.post("/_fake/config", json={"no_such_setting": 1})
    assert "no_such_setting" in response.json()["message"]
    assert fakesky.configure()["hour_window_s"] == 3600
