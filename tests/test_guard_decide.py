"""The guard's decisions, off the host (roles/guard/files/shoestring_guard.py): decide(), which
pauses bulk work on the first bad reading and resumes it only after the readings stayed healthy
for a while, and the Volume model of the EBS burst bucket. main() around them only reads /proc,
touches or removes the flag, logs and publishes; the whole guard runs on the converged host
(molecule/default/tests/test_guard.py), which greps its journal for the lines checked here."""

import os

import pytest

from tests.role_files import load

guard = load("guard", "shoestring_guard")

THRESHOLDS = guard.Thresholds(
    pause_below=30.0,
    resume_above=50.0,
    pressure_pause=20.0,
    pressure_resume=5.0,
    swapin_pause=50.0,
    resume_after=300.0,
)
RUNNING = guard.State.starting(paused=False)

PAUSE = "guard: PAUSE bulk work: "
HEALTHY_AGAIN = "guard: healthy again, resuming in 300s if it stays so"
RESUME = "guard: RESUME bulk work: "
BY_HAND = "guard: the pause flag was removed by hand: bulk work runs"


def reading(balance=80.0, pressure=0.0, swapin_rate=0.0, flag_exists=True):
    """A healthy reading unless told otherwise; the flag there, as it is while paused."""
    return guard.Reading(balance, pressure, swapin_rate, flag_exists)


def paused(since=None, reason="burst balance 12.0% < 30%", pauses=1, resumes=0):
    return guard.State(True, since, reason, pauses, resumes)


@pytest.fixture
def no_settings(monkeypatch):
    """No GUARD_* settings in the environment: the guard's own defaults."""
    for name in list(os.environ):
        if name.startswith("GUARD_"):
            monkeypatch.delenv(name)


# Pause eagerly.


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ({"balance": 29.9}, "burst balance 29.9% < 30%"),
        ({"pressure": 20.01}, "memory pressure 20.01 > 20"),
        ({"swapin_rate": 50.1}, "swap-ins 50.1/s > 50/s"),
    ],
    ids=["burst-balance", "memory-pressure", "swap-ins"],
)
def test_the_first_reading_past_any_pause_threshold_pauses(bad, why):
    decision = guard.decide(RUNNING, reading(flag_exists=False, **bad), THRESHOLDS, now=15.0)
    assert decision.state == guard.State(
        paused=True, healthy_since=None, reason=why, pauses=1, resumes=0
    )
    assert decision.flag == "touch"
    assert decision.said == (PAUSE + why,)
    assert decision.shown == why


def test_every_alarm_at_once_is_the_reason():
    decision = guard.decide(
        RUNNING, reading(balance=3.04, pressure=61.5, swapin_rate=200), THRESHOLDS, now=15.0
    )
    assert decision.state.reason == (
        "burst balance 3.0% < 30%; memory pressure 61.50 > 20; swap-ins 200.0/s > 50/s"
    )
    assert decision.said == (PAUSE + decision.state.reason,)


def test_exactly_at_the_pause_thresholds_does_not_pause():
    at = reading(balance=30.0, pressure=20.0, swapin_rate=50.0, flag_exists=False)
    decision = guard.decide(RUNNING, at, THRESHOLDS, now=15.0)
    assert decision == guard.Decision(state=RUNNING, flag=None, said=(), shown="healthy")


def test_running_and_healthy_nothing_happens_and_it_shows_healthy():
    decision = guard.decide(RUNNING, reading(flag_exists=False), THRESHOLDS, now=15.0)
    assert decision == guard.Decision(state=RUNNING, flag=None, said=(), shown="healthy")


# Resume conservatively.


@pytest.mark.parametrize(
    "unhealthy",
    [
        {"balance": 49.9},  # not bad enough to pause, not good enough to resume
        {"balance": 10.0},  # still past the pause threshold
        {"pressure": 5.0},  # the resume threshold is strict: under 5
        {"pressure": 25.0},
        {"swapin_rate": 50.1},
    ],
    ids=["balance-between", "balance-bad", "pressure-at-resume", "pressure-bad", "swap-ins-bad"],
)
def test_paused_it_stays_paused_while_unhealthy(unhealthy):
    state = paused()
    for now in (15.0, 315.0, 10_000.0):
        decision = guard.decide(state, reading(**unhealthy), THRESHOLDS, now)
        assert decision == guard.Decision(state=state, flag=None, said=(), shown=state.reason)


@pytest.mark.parametrize(
    "healthy",
    [{"balance": 50.0}, {"pressure": 4.99}, {"swapin_rate": 50.0}],
    ids=["balance-at-resume-above", "pressure-under-resume", "swap-ins-at-pause"],
)
def test_the_first_healthy_reading_starts_the_resume_clock(healthy):
    decision = guard.decide(paused(), reading(**healthy), THRESHOLDS, now=100.0)
    assert decision.state == paused(since=100.0)
    assert decision.flag is None
    assert decision.said == (HEALTHY_AGAIN,)


def test_it_resumes_only_after_resume_after_seconds_healthy():
    state = guard.decide(paused(), reading(), THRESHOLDS, now=100.0).state
    for now in (115.0, 250.0, 399.9):
        decision = guard.decide(state, reading(), THRESHOLDS, now)
        assert decision == guard.Decision(state=state, flag=None, said=(), shown=state.reason)
    decision = guard.decide(state, reading(), THRESHOLDS, now=400.0)
    assert decision.state == guard.State(
        paused=False, healthy_since=None, reason="healthy for 300s", pauses=1, resumes=1
    )
    assert decision.flag == "unlink"
    assert decision.said == (RESUME + "healthy for 300s",)
    assert decision.shown == "healthy"


def test_an_unhealthy_reading_resets_the_resume_clock():
    state = guard.decide(paused(), reading(), THRESHOLDS, now=100.0).state
    state = guard.decide(state, reading(balance=45.0), THRESHOLDS, now=390.0).state
    assert state == paused(since=None)
    decision = guard.decide(state, reading(), THRESHOLDS, now=405.0)
    assert decision.state == paused(since=405.0)
    assert decision.said == (HEALTHY_AGAIN,), "healthy again: said again, clock from now"
    assert guard.decide(decision.state, reading(), THRESHOLDS, now=704.0).state.paused
    assert guard.decide(decision.state, reading(), THRESHOLDS, now=705.0).state.paused is False


def test_healthy_for_is_how_long_it_was_healthy_when_it_resumed():
    state = paused(since=100.0)
    decision = guard.decide(state, reading(), THRESHOLDS, now=417.4)
    assert decision.state.reason == "healthy for 317s"
    assert decision.said == (RESUME + "healthy for 317s",)


# The operator removed the flag.


def test_a_flag_removed_by_hand_ends_the_pause():
    decision = guard.decide(paused(since=100.0), reading(flag_exists=False), THRESHOLDS, 200.0)
    assert decision.state == guard.State(
        paused=False,
        healthy_since=None,
        reason="burst balance 12.0% < 30%",
        pauses=1,
        resumes=0,
    )
    assert decision.flag is None, "nothing to remove: the operator did"
    assert decision.said == (BY_HAND,)
    assert decision.shown == "healthy"


def test_a_flag_removed_by_hand_while_still_bad_pauses_again_at_once():
    decision = guard.decide(paused(), reading(balance=12.0, flag_exists=False), THRESHOLDS, 15.0)
    assert decision.state == paused(reason="burst balance 12.0% < 30%", pauses=2)
    assert decision.flag == "touch"
    assert decision.said == (BY_HAND, PAUSE + "burst balance 12.0% < 30%")


def test_no_flag_while_running_is_not_a_removal():
    decision = guard.decide(RUNNING, reading(flag_exists=False), THRESHOLDS, 15.0)
    assert BY_HAND not in decision.said


# The counts, and starting with the flag there.


def test_the_counts_add_up_over_pauses_and_resumes():
    state = RUNNING
    bad, good = reading(balance=10.0, flag_exists=False), reading()
    for now, now_reading in [
        (15, bad),
        (30, good),
        (330, good),  # resume 1
        (345, bad),  # pause 2
        (360, reading(balance=10.0, flag_exists=False)),  # removed by hand, paused again: 3
        (375, good),
        (675, good),  # resume 2
    ]:
        state = guard.decide(state, now_reading, THRESHOLDS, float(now)).state
    assert (state.paused, state.pauses, state.resumes) == (False, 3, 2)
    assert state.counts == {"pause": 3, "resume": 2}


def test_started_with_the_flag_there_it_is_paused_until_healthy_long_enough():
    state = guard.State.starting(paused=True)
    assert state == guard.State(True, None, "starting", 0, 0)
    state = guard.decide(state, reading(), THRESHOLDS, now=15.0).state
    assert (state.paused, state.healthy_since) == (True, 15.0)
    decision = guard.decide(state, reading(), THRESHOLDS, now=315.0)
    assert (decision.state.paused, decision.flag, decision.state.counts) == (
        False,
        "unlink",
        {"pause": 0, "resume": 1},
    )


def test_thresholds_come_from_the_environment(no_settings, monkeypatch):
    assert guard.Thresholds.from_env() == (30.0, 50.0, 20.0, 5.0, 50.0, 300.0)
    monkeypatch.setenv("GUARD_PAUSE_BELOW_PERCENT", "25")
    monkeypatch.setenv("GUARD_RESUME_AFTER_S", "20")
    thresholds = guard.Thresholds.from_env()
    assert (thresholds.pause_below, thresholds.resume_after) == (25.0, 20.0)


# The burst bucket.


def gp2(size_gib=100, credits=1_000_000.0):
    return guard.Volume(
        "gp2",
        size_gib,
        gp2_min_iops=100,
        gp2_iops_per_gib=3,
        gp2_burst_iops=3000,
        gp2_credits=credits,
        gp3_iops=3000,
    )


def gp3(iops=3000):
    """A gp3 volume on a t3.small (the instance's EBS burst is the Volume's default)."""
    return guard.Volume(
        "gp3",
        100,
        gp2_min_iops=100,
        gp2_iops_per_gib=3,
        gp2_burst_iops=3000,
        gp2_credits=1_000_000.0,
        gp3_iops=iops,
    )


def test_gp2_baseline_is_iops_per_gib_at_least_the_minimum():
    assert gp2(size_gib=500).baseline == 1500
    assert gp2(size_gib=20).baseline == 100, "3 x 20 GiB = 60: the minimum, 100"
    assert gp2().describe() == "gp2 100 GiB: baseline 300 IOPS, burst 3000, bucket 1000000 credits"


def test_gp2_starts_full():
    volume = gp2()
    assert volume.credits == 1_000_000.0
    assert volume.balance_percent() == 100.0


def test_gp2_spends_above_the_baseline():
    volume = gp2()  # baseline 300
    volume.spend(1300, 10)
    assert volume.credits == 1_000_000 - 10_000
    assert volume.balance_percent() == pytest.approx(99.0)
    volume.spend(300, 60)
    assert volume.credits == 1_000_000 - 10_000, "at the baseline: neither spent nor earned"


def test_gp2_refills_below_the_baseline_up_to_its_size():
    volume = gp2()
    volume.spend(3000, 100)  # 270 000 spent
    volume.spend(100, 50)  # 10 000 earned
    assert volume.credits == 1_000_000 - 270_000 + 10_000
    volume.spend(0, 10_000)  # 3 000 000 to earn: the bucket holds 1 000 000
    assert volume.credits == 1_000_000


def test_gp2_never_goes_below_empty():
    volume = gp2()
    volume.spend(3000, 1_000)  # 2 700 000 spent of 1 000 000
    assert volume.credits == 0.0
    assert volume.balance_percent() == 0.0
    volume.spend(400, 10)
    assert volume.credits == 0.0
    volume.spend(200, 10)
    assert volume.credits == 1_000.0, "earned from empty, not from below it"


@pytest.mark.parametrize(("percent", "balance"), [(12.0, 12.0), (150.0, 100.0), (-5.0, 0.0)])
def test_resync_sets_the_balance_clamped_to_0_to_100_percent(percent, balance):
    volume = gp2()
    volume.spend(3000, 100)
    volume.resync(percent)
    assert volume.balance_percent() == pytest.approx(balance)
    assert volume.credits == pytest.approx(1_000_000 * balance / 100)


def test_gp3_s_bucket_is_the_instance_s_ebs_burst():
    volume = gp3()  # a t3.small: 1,000 IOPS baseline, 11,800 for 30 minutes
    assert volume.baseline == 1000
    assert volume.capacity == (11_800 - 1_000) * 30 * 60
    assert volume.credits == volume.capacity, "starts full"
    assert volume.balance_percent() == 100.0
    assert volume.describe() == (
        "gp3 100 GiB, 3000 IOPS; the instance's EBS: baseline 1000 IOPS, burst 11800,"
        " bucket 19440000 credits"
    )


def test_gp3_spends_the_instance_s_bucket_above_its_baseline():
    volume = gp3()
    volume.spend(3000, 60)  # the gp3 volume's full 3,000 IOPS: 2,000 a second above baseline
    assert volume.credits == 19_440_000 - 120_000
    volume.spend(1000, 600)
    assert volume.credits == 19_440_000 - 120_000, "at the baseline: neither spent nor earned"
    volume.spend(11_800, 30 * 60 - 60 * 2000 / 10_800)  # the rest of the 30 minutes of burst
    assert volume.balance_percent() == pytest.approx(0.0, abs=1e-9)


def test_gp3_refills_below_the_instance_s_baseline_up_to_full():
    volume = gp3()
    volume.spend(3000, 3600)  # 7 200 000 spent
    volume.spend(400, 1000)  # 600 000 earned
    assert volume.credits == 19_440_000 - 7_200_000 + 600_000
    assert volume.balance_percent() == pytest.approx(100 * 12_840_000 / 19_440_000)
    volume.spend(0, 24 * 3600)  # 86 400 000 to earn: the bucket holds 19 440 000
    assert volume.credits == 19_440_000


def test_gp3_stops_at_empty():
    volume = gp3()
    volume.spend(3000, 4 * 3600)  # 28 800 000 spent of 19 440 000
    assert volume.credits == 0.0
    assert volume.balance_percent() == 0.0
    volume.spend(1000, 60)
    assert volume.credits == 0.0
    volume.spend(900, 10)
    assert volume.credits == 1_000.0, "earned from empty, not from below it"


@pytest.mark.parametrize(("percent", "balance"), [(12.0, 12.0), (150.0, 100.0), (-5.0, 0.0)])
def test_cloudwatch_s_ebsiobalance_resets_the_instance_s_bucket(percent, balance):
    volume = gp3()
    volume.spend(3000, 600)
    volume.resync(percent)
    assert volume.balance_percent() == pytest.approx(balance)
    assert volume.credits == pytest.approx(19_440_000 * balance / 100)


def test_a_drained_instance_bucket_pauses_bulk_work_and_a_refill_resumes_it():
    volume = gp3()
    volume.spend(3000, 3 * 3600)  # 21 600 000: more than the bucket holds
    decision = guard.decide(
        RUNNING, reading(balance=volume.balance_percent(), flag_exists=False), THRESHOLDS, 15.0
    )
    assert decision.said == (PAUSE + "burst balance 0.0% < 30%",)
    volume.resync(97.0)  # CloudWatch's EBSIOBalance% says the instance refilled
    decision = guard.decide(
        decision.state, reading(balance=volume.balance_percent()), THRESHOLDS, 30.0
    )
    assert decision.said == (HEALTHY_AGAIN,)


def test_the_volume_comes_from_the_environment(no_settings, monkeypatch):
    volume = guard.Volume.from_env()
    assert (volume.type, volume.size_gib, volume.baseline) == ("gp2", 20.0, 100.0)
    assert (volume.burst, volume.capacity, volume.credits) == (3000.0, 5.4e6, 5.4e6)
    monkeypatch.setenv("GUARD_VOLUME_TYPE", "gp3")
    volume = guard.Volume.from_env()
    assert (volume.type, volume.baseline, volume.burst) == ("gp3", 1000.0, 11800.0)
    assert volume.capacity == volume.credits == 10_800 * 30 * 60
    monkeypatch.setenv("GUARD_GP3_IOPS", "6000")
    monkeypatch.setenv("GUARD_INSTANCE_EBS_BASELINE_IOPS", "2000")
    monkeypatch.setenv("GUARD_INSTANCE_EBS_BURST_IOPS", "5000")
    monkeypatch.setenv("GUARD_INSTANCE_EBS_BURST_MINUTES", "10")
    volume = guard.Volume.from_env()
    assert (volume.gp3_iops, volume.baseline, volume.capacity) == (6000.0, 2000.0, 1_800_000.0)
    monkeypatch.setenv("GUARD_VOLUME_TYPE", "gp2")
    monkeypatch.setenv("GUARD_VOLUME_SIZE_GIB", "500")
    monkeypatch.setenv("GUARD_GP2_CREDITS", "1000")
    volume = guard.Volume.from_env()
    assert (volume.baseline, volume.capacity, volume.credits) == (1500.0, 1000.0, 1000.0)
