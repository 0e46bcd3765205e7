"""python3 -m fakesky as a service: every setting a flag, seeded accounts and targets, and the
/_fake/state report."""

import ipaddress
import pickle
import socket
import subprocess
import sys
from dataclasses import fields

import httpx
from atproto import Client, models
from conftest import APP_DIR, free_port, wait_until

from fakesky.accounts import Account
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
    # Each call counted under its method, the refused write too (two calls).
    assert alice_state["calls_by_method"]["com.atproto.repo.applyWrites"] == 2
    assert sum(alice_state["calls_by_method"].values()) == alice_state["calls"]
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


def start(port, state_file, *flags):
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "fakesky", "--port", str(port)),
            *("--state-file", str(state_file), "--account", "kept.fake.test:app-pass"),
            *("--target", "crowd:70", *flags),
        ],
        cwd=APP_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
    wait_until(lambda: _answers(http), 10, message="python -m fakesky")
    return process, http


def refusal(flag, value):
    """python -m fakesky FLAG VALUE, which must refuse to start: its error output."""
    result = subprocess.run(
        [sys.executable, "-m", "fakesky", "--port", str(free_port()), flag, value],
        cwd=APP_DIR,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode != 0
    assert flag in result.stderr
    return result.stderr


def stop(process, signal_name="terminate"):
    getattr(process, signal_name)()
    process.wait(10)
    return process.stdout.read()


def test_a_state_file_keeps_sessions_and_records_across_a_restart(tmp_path):
    """The host that runs the fake restarts; Bluesky would not have forgotten anything: the
    official SDK's session and the blocks it made are there after the fake comes back."""
    port, state_file = free_port(), tmp_path / "state.pickle"
    url = f"http://127.0.0.1:{port}"
    process, http = start(port, state_file, "--indexing-delay-s", "0")
    try:
        client = Client(base_url=url)
        me = client.login("kept.fake.test", "app-pass")
        page = client.get_followers("crowd-70.fake.test", limit=3)
        now = client.get_current_time_iso()
        for follower in page.followers:
            client.app.bsky.graph.block.create(
                me.did, models.AppBskyGraphBlock.Record(subject=follower.did, created_at=now)
            )
        http.post("/_fake/config", json={"write_points_per_hour": 4000}).raise_for_status()
    finally:
        stop(process)
    assert state_file.stat().st_mode & 0o777 == 0o600

    process, http = start(port, state_file, "--indexing-delay-s", "0")
    try:
        assert not state_file.exists(), "a state file is read once: a crash never restores it"
        blocks = client.app.bsky.graph.get_blocks().blocks  # the same session, no new login
        assert sorted(b.did for b in blocks) == sorted(f.did for f in page.followers)
        state = http.get("/_fake/state", params={"handle": "kept.fake.test"}).json()
        assert (state["logins"], state["block_count"]) == (1, 3)
        assert http.get("/_fake/config").json()["write_points_per_hour"] == 4000
    finally:
        output = stop(process, "kill")  # a crash: nothing saved
    assert "state restored from" in output
    assert not state_file.exists()

    process, http = start(port, state_file, "--indexing-delay-s", "0")
    try:
        state = http.get("/_fake/state", params={"handle": "kept.fake.test"}).json()
        assert state["block_count"] == 0, "a crash restored old state"
    finally:
        stop(process)

    # Other start-up settings than the saved state's: it starts afresh.
    process, http = start(port, state_file, "--indexing-delay-s", "1")
    try:
        state = http.get("/_fake/state", params={"handle": "kept.fake.test"}).json()
        assert state["block_count"] == 0
        assert http.get("/_fake/config").json()["indexing_delay_s"] == 1
    finally:
        output = stop(process)
    assert "state restored from" not in output


def test_an_account_saved_by_an_older_fake_gets_the_newer_fields_defaults():
    """A state file outlives an upgrade of the fake: an account pickled before a counter
    existed comes back with that counter at its default, not without it."""
    account = Account(did="did:plc:old", handle="old.fake.test", password="pw")
    account.rate_limited = 2
    for newer in ("refused_by", "last_refusal"):
        del account.__dict__[newer]  # as the older class wrote it
    restored = pickle.loads(pickle.dumps(account))  # noqa: S301 - our own bytes
    assert (restored.refused_by, restored.last_refusal, restored.rate_limited) == ({}, None, 2)
    assert restored.summary()["refused_by"] == {}


def this_host_address():
    """This machine's address on its network, if it has one: the source address of a route
    out (a UDP socket's connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else address


def from_address(address, port, **headers):
    """A client whose connections leave from `address`, as another host's would."""
    return httpx.Client(
        base_url=f"http://127.0.0.1:{port}/xrpc/",
        transport=httpx.HTTPTransport(local_address=address),
        headers=headers,
        timeout=5,
    )


def test_on_a_test_network_it_names_its_public_url_and_counts_each_client_address():
    """A multi-host test runs the fake on a container of its own: listening beyond loopback
    (--host), naming the address the other hosts reach it by in every DID document
    (--public-url), and counting the per-address limit by the connecting address, as Bluesky
    does for each worker host: no header (X-Forwarded-For) moves a client to another budget."""
    port = free_port()
    public = f"http://172.30.0.10:{port}"
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "fakesky", "--host", "0.0.0.0", "--port", str(port)),  # noqa: S104
            *("--public-url", public, "--account", f"me.fake.test:{PASSWORD}"),
            *("--ip-requests-per-window", "2", "--ip-window-s", "300"),
        ],
        cwd=APP_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
        wait_until(lambda: _answers(http), 10, message="python -m fakesky")
        address = this_host_address()
        if address:  # a host with no network has only loopback to reach it by
            assert httpx.get(f"http://{address}:{port}/_fake/config", timeout=5).status_code == 200

        with from_address("127.0.0.4", port) as signer:
            session = signer.post(
                "com.atproto.server.createSession",
                json={"identifier": "me.fake.test", "password": PASSWORD},
            ).json()
        pds = {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": public}
        assert pds in session["didDoc"]["service"]
        assert pds in http.get(f"/{session['did']}").json()["service"]

        def resolve(client):
            return client.get(
                "com.atproto.identity.resolveHandle", params={"handle": "me.fake.test"}
            ).status_code

        with (
            from_address("127.0.0.2", port) as worker_1,
            from_address("127.0.0.3", port) as worker_2,
        ):
            assert [resolve(worker_1) for _ in range(3)] == [200, 200, 429]
            assert resolve(worker_2) == 200  # another address, its own budget
        with from_address("127.0.0.2", port, **{"X-Forwarded-For": "127.0.0.5"}) as disguised:
            assert resolve(disguised) == 429
        addresses = http.get("/_fake/state").json()["totals"]["addresses"]
        assert addresses["127.0.0.2"] == {"requests": 4, "writes": 0, "ip_rate_limited": 2}
        assert addresses["127.0.0.3"] == {"requests": 1, "writes": 0, "ip_rate_limited": 0}
        assert "127.0.0.5" not in addresses
    finally:
        process.terminate()
        process.wait(10)
