"""make bench-cluster's figures (bench/cluster_figures.py): each phase's blocks/s, the fake's
counters per address and each host's CPU and writes come from the samples and snapshots inside
that phase only, and the ratio's verdict is the goal's."""

import pytest

from bench import cluster_figures

NAMES = {"10.0.0.12": "worker-a", "10.0.0.13": "worker-b"}
SETTINGS = {"ip_requests_per_window": 3000, "ip_window_s": 300.0}


def sample(t, blocks, a_requests, b_requests=0):
    addresses = {"10.0.0.12": {"requests": a_requests, "writes": a_requests // 2}}
    if b_requests:
        addresses["10.0.0.13"] = {"requests": b_requests, "writes": b_requests // 2}
    fake = {"blocks": blocks, "duplicates": 0, "addresses": addresses}
    return {"type": "sample", "t": t, "phase": "load", "fake": fake}


def snapshot(t, cpu_s, writes, others=()):
    hosts = {"worker-a": {"cpu_ns": int(cpu_s * 1e9), "write_ios": writes, "read_ios": 0}}
    return {"t": t, "hosts": hosts, "others": list(others)}


# One worker at 500 blocks/s and 9 requests a second for 100 s, then two at 1,000 and 18.
SAMPLES = [sample(t, 500 * t, 9 * t) for t in range(0, 101)] + [
    sample(t, 50_000 + 1000 * (t - 100), 900 + 9 * (t - 100), 9 * (t - 100))
    for t in range(101, 201)
]


def test_a_phase_counts_only_what_happened_inside_it():
    figures = cluster_figures.phase_figures(
        SAMPLES, snapshot(20, 10, 100), snapshot(80, 40, 160, ["other-ci"]), NAMES, SETTINGS
    )
    assert figures["blocks_per_s"] == pytest.approx(500)
    assert figures["blocks"] == 30_000
    assert list(figures["addresses"]) == ["10.0.0.12"]  # worker-b sent nothing yet
    a = figures["addresses"]["10.0.0.12"]
    assert a["host"] == "worker-a"
    assert a["requests"] == 540
    assert a["share_pct"] == pytest.approx(90)
    assert figures["hosts"]["worker-a"] == {
        "cpu_s": 30,
        "vcpu": 0.5,
        "write_ios": 60,
        "write_iops": 1.0,
        "read_ios": 0,
    }
    assert figures["others"] == ["other-ci"]


def test_the_ratio_of_two_hosts_to_one_and_its_verdict():
    one = cluster_figures.phase_figures(
        SAMPLES, snapshot(20, 0, 0), snapshot(80, 0, 0), NAMES, SETTINGS
    )
    two = cluster_figures.phase_figures(
        SAMPLES, snapshot(120, 0, 0), snapshot(180, 0, 0), NAMES, SETTINGS
    )
    assert two["addresses"]["10.0.0.13"]["requests_per_s"] == pytest.approx(9)
    assert cluster_figures.ratio(one, two) == pytest.approx(2.0)
    meta = {
        "date": "2026-12-06 05:00",
        "commit": "abc1234",
        "machine": "2 x CPU",
        "people": 150,
        "compression": 25.0,
        "per_ip_rps": 10.0,
        "warmup_s": 120,
        "warmup_two_s": 60,
        "measure_s": 240,
        "load_before": "1 1 1",
        "others": "none",
    }
    text = cluster_figures.summary_markdown(
        meta, {"one workers host": one, "two workers hosts": two}, 2.0
    )
    assert "| **blocks/s** | **500.0** | **1,000.0** |" in text
    assert "**2.00x** (goal at least 1.8x: met)" in text
    slower = dict(two, blocks_per_s=800.0)
    assert cluster_figures.ratio(one, slower) == pytest.approx(1.6)
    text = cluster_figures.summary_markdown(
        meta, {"one workers host": one, "two workers hosts": slower}, 1.6
    )
    assert "goal at least 1.8x: missed" in text


def test_a_phase_without_samples_of_the_fake_is_refused():
    with pytest.raises(ValueError, match="no samples"):
        cluster_figures.phase_figures(
            SAMPLES, snapshot(500, 0, 0), snapshot(600, 0, 0), NAMES, SETTINGS
        )
