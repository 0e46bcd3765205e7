"""The guard's decisions, off the host (roles/guard/files/shoestring_guard.py): decide(), which
pauses bulk work on the first bad reading and resumes it only after the readings stayed healthy
for a while, the Volume model of the EBS burst bucket, the CpuCredits model of the instance's CPU
credit bank, and what the guard publishes (status(), metrics()). main() around them only reads
/proc, touches or removes the flag, logs and publishes; the whole guard runs on the converged host
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
    # A t3.small's bank of 576 credits: pause below 10%, resume at 25%.
    cpu_pause_below=57.6,
    cpu_resume_above=144.0,
)
RUNNING = guard.State.starting(paused=False)

PAUSE = "guard: PAUSE bulk work: "
HEALTHY_AGAIN = "guard: healthy again, resuming in 300s if it stays so"
RESUME = "guard: RESUME bulk work: "
BY_HAND = "guard: the pause flag was removed by hand: bulk work runs"


def reading(balance=80.0, pressure=0.0, swapin_rate=0.0, flag_exists=True, cpu_credits=576.0):
    """A healthy reading unless told otherwise (the CPU credit bank full); the flag there, as it
    is while paused."""
    return guard.Reading(balance, pressure, swapin_rate, flag_exists, cpu_credits)


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
        ({"cpu_credits": 57.5}, "CPU credits 57.5 < 57.6"),
    ],
    ids=["burst-balance", "memory-pressure", "swap-ins", "cpu-credits"],
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
        RUNNING,
        reading(balance=3.04, pressure=61.5, swapin_rate=200, cpu_credits=0.0),
        THRESHOLDS,
        now=15.0,
    )
    assert decision.state.reason == (
        "burst balance 3.0% < 30%; memory pressure 61.50 > 20; swap-ins 200.0/s > 50/s;"
        " CPU credits 0.0 < 57.6"
    )
    assert decision.said == (PAUSE + decision.state.reason,)


def test_exactly_at_the_pause_thresholds_does_not_pause():
    at = reading(balance=30.0, pressure=20.0, swapin_rate=50.0, flag_exists=False, cpu_credits=57.6)
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
        {"cpu_credits": 143.9},  # above the CPU's pause threshold, under its resume one
        {"cpu_credits": 10.0},
    ],
    ids=[
        "balance-between",
        "balance-bad",
        "pressure-at-resume",
        "pressure-bad",
        "swap-ins-bad",
        "cpu-credits-between",
        "cpu-credits-bad",
    ],
)
def test_paused_it_stays_paused_while_unhealthy(unhealthy):
    state = paused()
    for now in (15.0, 315.0, 10_000.0):
        decision = guard.decide(state, reading(**unhealthy), THRESHOLDS, now)
        assert decision == guard.Decision(state=state, flag=None, said=(), shown=state.reason)


@pytest.mark.parametrize(
    "healthy",
    [{"balance": 50.0}, {"pressure": 4.99}, {"swapin_rate": 50.0}, {"cpu_credits": 144.0}],
    ids=[
        "balance-at-resume-above",
        "pressure-under-resume",
        "swap-ins-at-pause",
        "cpu-credits-at-resume-above",
    ],
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
    assert guard.Thresholds.from_env() == (30.0, 50.0, 20.0, 5.0, 50.0, 300.0, 57.6, 144.0)
    monkeypatch.setenv("GUARD_PAUSE_BELOW_PERCENT", "25")
    monkeypatch.setenv("GUARD_RESUME_AFTER_S", "20")
    monkeypatch.setenv("GUARD_CPU_PAUSE_BELOW_CREDITS", "30")
    monkeypatch.setenv("GUARD_CPU_RESUME_ABOVE_CREDITS", "100.5")
    thresholds = guard.Thresholds.from_env()
    assert (thresholds.pause_below, thresholds.resume_after) == (25.0, 20.0)
    assert (thresholds.cpu_pause_below, thresholds.cpu_resume_above) == (30.0, 100.5)


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


# The CPU credit bank: a t3.small earns 24 credits an hour (0.4 vCPU) and banks at most 576.


def t3_small():
    return guard.CpuCredits(baseline_vcpu=0.4, credits_max=576.0)


def test_the_cpu_bank_starts_full():
    bank = t3_small()
    assert bank.credits == 576.0
    assert bank.describe() == "CPU baseline 0.4 vCPU (24 credits an hour), bank of 576 credits"


def test_the_cpu_bank_spends_a_credit_a_vcpu_minute_above_the_baseline():
    bank = t3_small()
    bank.spend(2.0, 60)  # both vCPUs busy for a minute: 2 spent, 0.4 earned
    assert bank.credits == pytest.approx(576 - 1.6)
    bank.spend(0.4, 3600)
    assert bank.credits == pytest.approx(576 - 1.6), "at the baseline: neither spent nor earned"
    bank.spend(1.2, 3600)  # docs/aws.md's 1.2 vCPU: 48 credits an hour
    assert bank.credits == pytest.approx(576 - 1.6 - 48)


def test_the_cpu_bank_earns_below_the_baseline_up_to_its_max():
    bank = t3_small()
    bank.spend(2.0, 3600)  # 96 spent
    bank.spend(0.0, 3600)  # idle: 24 earned
    assert bank.credits == pytest.approx(576 - 96 + 24)
    bank.spend(0.1, 24 * 3600)  # 432 to earn: the bank holds 576
    assert bank.credits == 576.0


def test_the_cpu_bank_never_goes_below_empty():
    bank = t3_small()
    bank.spend(2.0, 8 * 3600)  # 768 spent of 576
    assert bank.credits == 0.0
    bank.spend(0.3, 600)
    assert bank.credits == pytest.approx(1.0), "earned from empty, not from below it"


@pytest.mark.parametrize(("figure", "credits"), [(412.5, 412.5), (900.0, 576.0), (-3.0, 0.0)])
def test_cloudwatch_s_cpu_credit_balance_resets_the_bank_within_0_and_the_max(figure, credits):
    bank = t3_small()
    bank.spend(2.0, 3600)
    bank.resync(figure)
    assert bank.credits == credits


def test_the_cpu_bank_comes_from_the_environment(no_settings, monkeypatch):
    bank = guard.CpuCredits.from_env()
    assert (bank.baseline_vcpu, bank.credits_max, bank.credits) == (0.4, 576.0, 576.0)
    monkeypatch.setenv("GUARD_CPU_BASELINE_VCPU", "0.6")  # a t3.large: 36 an hour, 864
    monkeypatch.setenv("GUARD_CPU_CREDITS_MAX", "864")
    bank = guard.CpuCredits.from_env()
    assert (bank.baseline_vcpu, bank.credits_max, bank.credits) == (0.6, 864.0, 864.0)
    monkeypatch.setenv("GUARD_CPU_CREDITS", "true")
    assert guard.CpuCredits.from_env() is not None


@pytest.mark.parametrize("off", ["false", "False"])
def test_guard_cpu_credits_false_watches_no_bank(no_settings, monkeypatch, off):
    monkeypatch.setenv("GUARD_CPU_CREDITS", off)  # Ansible's bool, lowered or not
    assert guard.CpuCredits.from_env() is None


def test_cpu_credits_not_watched_neither_pause_nor_hold_a_pause():
    decision = guard.decide(RUNNING, reading(flag_exists=False, cpu_credits=None), THRESHOLDS, 15.0)
    assert decision == guard.Decision(state=RUNNING, flag=None, said=(), shown="healthy")
    decision = guard.decide(paused(), reading(cpu_credits=None), THRESHOLDS, now=100.0)
    assert decision.said == (HEALTHY_AGAIN,)


def test_the_disk_and_the_cpu_each_hold_a_pause_the_other_would_end():
    state = paused(reason="CPU credits 50.0 < 57.6")
    disk_healthy_cpu_low = reading(balance=100.0, cpu_credits=100.0)
    cpu_healthy_disk_low = reading(balance=40.0, cpu_credits=576.0)
    for now in (100.0, 400.0, 700.0):
        for held in (disk_healthy_cpu_low, cpu_healthy_disk_low):
            assert guard.decide(state, held, THRESHOLDS, now).state == state


# /proc/stat: "cpu", then ticks: user nice system idle iowait irq softirq steal guest guest_nice
PROC_STAT = """cpu  4705 150 1120 16250 520 30 25 400 60 0
cpu0 2350 75 560 8125 260 15 12 200 30 0
cpu1 2355 75 560 8125 260 15 13 200 30 0
intr 114930548 113199788 3 0 5 263 0 4 [...]
"""


def test_busy_cpu_time_is_user_nice_system_irq_softirq_of_every_cpu():
    # 4705 + 150 + 1120 + 30 + 25 ticks; idle, iowait, steal and guest (in user already) not.
    assert guard.cpu_busy_s(PROC_STAT, 100) == pytest.approx(60.30)


def test_this_host_s_busy_cpu_time_is_in_seconds_at_least_this_process_s():
    """The real /proc/stat, in seconds: at least what this process used meanwhile, at most every
    CPU busy the whole time (a tick of rounding each way)."""
    tick = 1 / os.sysconf("SC_CLK_TCK")
    cpus = os.cpu_count()
    started, own, first = guard.time.monotonic(), guard.time.process_time(), guard.read_cpu_busy_s()
    sum(range(3_000_000))
    busy = guard.read_cpu_busy_s() - first
    own = guard.time.process_time() - own
    assert own - 2 * tick * cpus <= busy <= (guard.time.monotonic() - started + 2 * tick) * cpus


# The CPU rule over time: the guard's loop, off the host, with the disk and memory healthy.


def run(bank, vcpus, until, state=RUNNING, now=0.0, interval=15.0):
    """Every interval until `until` (seconds), the bank spends what vcpus used and decide() reads
    it (None: the CPU rule is off). The state, the clock, and the times of what was said."""
    said = []
    while now < until:
        now += interval
        if bank is not None:
            bank.spend(vcpus, interval)
        cpu = None if bank is None else bank.credits
        decision = guard.decide(
            state, reading(flag_exists=state.paused, cpu_credits=cpu), THRESHOLDS, now
        )
        state = decision.state
        said += [(now, message) for message in decision.said]
    return state, now, said


@pytest.mark.parametrize("vcpus", [0.0, 0.2, 0.39, 0.4])
def test_a_load_at_or_under_the_baseline_never_pauses(vcpus):
    bank = t3_small()
    state, _, said = run(bank, vcpus, until=7 * 24 * 3600)
    assert (state.paused, said) == (False, [])
    assert bank.credits == 576.0


def test_a_load_under_the_baseline_refills_an_empty_bank_and_never_pauses_it_again():
    bank = t3_small()
    bank.resync(0.0)  # CloudWatch: a new t3 in standard mode starts with no credits
    state, now, said = run(bank, 0.3, until=15.0)
    assert said == [(15.0, PAUSE + "CPU credits 0.0 < 57.6")]
    state, now, said = run(bank, 0.3, until=7 * 24 * 3600, state=state, now=now)
    # 144 credits at 0.1 vCPU under the baseline (6 an hour) take 24 h; then 300 s healthy.
    assert [message for _, message in said] == [HEALTHY_AGAIN, RESUME + "healthy for 300s"]
    assert said[0][0] == pytest.approx(24 * 3600, abs=15)
    assert said[1][0] - said[0][0] == 300
    assert bank.credits == 576.0


def test_a_load_over_the_baseline_pauses_before_the_bank_is_empty_at_the_expected_time():
    bank = t3_small()
    # docs/aws.md's 1.2 vCPU: 48 credits an hour, so a full bank is empty after 12 h and under
    # 57.6 credits (10%) after (576 - 57.6) / 48 = 10.8 h.
    state, _, said = run(bank, 1.2, until=11 * 3600)
    assert len(said) == 1
    paused_at, message = said[0]
    assert message.startswith(PAUSE + "CPU credits 57.")
    assert message.endswith(" < 57.6")
    assert paused_at == pytest.approx(10.8 * 3600, abs=15)
    assert state.paused
    assert 12 * 3600 - paused_at >= 70 * 60, "paused 72 minutes before the bank is empty"


def test_paused_by_the_cpu_it_resumes_only_at_the_resume_threshold_held_for_resume_after():
    bank = t3_small()
    state, now, said = run(bank, 1.2, until=10.8 * 3600 + 15)  # paused at 10.8 h (above)
    paused_at = said[0][0]
    assert now == paused_at
    at_pause = bank.credits  # just under 57.6
    # Bulk work paused: what is left uses 0.2 vCPU, 12 credits an hour under the baseline.
    # Past the pause threshold is not enough: at 100 credits (3.6 h later) still paused.
    state, now, said = run(bank, 0.2, until=paused_at + 3.6 * 3600, state=state, now=now)
    assert (state.paused, said) == (True, [])
    assert 99 < bank.credits < 101
    state, now, said = run(bank, 0.2, until=paused_at + 8 * 3600, state=state, now=now)
    # From just under 57.6 to 144 at 12 an hour: about 7.2 h; then healthy for 300 s.
    assert [message for _, message in said] == [HEALTHY_AGAIN, RESUME + "healthy for 300s"]
    assert said[0][0] - paused_at == pytest.approx((144 - at_pause) / 12 * 3600, abs=15)
    assert said[1][0] - said[0][0] == 300
    assert not state.paused


def test_with_the_cpu_rule_off_a_load_over_the_baseline_never_pauses():
    state, _, said = run(None, 2.0, until=48 * 3600)
    assert (state.paused, said) == (False, [])


# What the guard publishes: state.json (shoestring-status) and the node exporter's textfile.


def published(cpu, cpu_file=""):
    cloudwatch = guard.CloudWatchBalance("")
    cpu_cloudwatch = guard.CloudWatchBalance(cpu_file, "cpu")
    rates = guard.Rates(iops=120.0, pressure=0.5, swapin=0.0, vcpus=1.25)
    shown = guard.status(
        paused(reason="CPU credits 50.0 < 57.6"),
        "CPU credits 50.0 < 57.6",
        "nvme1n1",
        gp2(),
        cloudwatch,
        cpu,
        cpu_cloudwatch,
        rates,
    )
    return shown, guard.metrics(shown)


def metric_values(text):
    return {
        name: float(value)
        for name, value in (line.rsplit(" ", 1) for line in text.splitlines())
        if not name.startswith("#")
    }


def test_the_cpu_bank_is_published_with_the_reason_that_paused():
    bank = t3_small()
    bank.resync(50.0)
    shown, text = published(bank)
    assert (shown["paused"], shown["reason"]) == (True, "CPU credits 50.0 < 57.6")
    assert (shown["cpu_credits"], shown["cpu_credits_max"], shown["cpu_vcpus_used"]) == (
        50.0,
        576.0,
        1.25,
    )
    assert shown["cpu"] == "CPU baseline 0.4 vCPU (24 credits an hour), bank of 576 credits"
    assert shown["cpu_cloudwatch"] == "CloudWatch not asked (no instance id)"
    assert shown["cpu_cloudwatch_asked"] is False
    values = metric_values(text)
    assert values["shoestring_guard_bulk_paused"] == 1
    assert values["shoestring_guard_cpu_credits"] == 50.0
    assert values["shoestring_guard_cpu_credits_max"] == 576.0
    assert values["shoestring_guard_cloudwatch_cpu_credit_balance"] == -1
    assert values["shoestring_guard_cpu_vcpus_used"] == 1.25
    assert values["shoestring_guard_burst_balance_percent"] == 100.0
    assert "# TYPE shoestring_guard_cpu_credits gauge" in text


def test_cloudwatch_s_cpu_credit_balance_is_published_once_applied(tmp_path):
    path = tmp_path / "cpu-credit-balance.json"
    path.write_text('{"credits": 412.5, "datapoint_at": 1000.0, "error": null}')
    bank = t3_small()
    shown, _ = published(bank, str(path))
    assert (shown["cpu_cloudwatch_asked"], shown["cpu_cloudwatch_credits"]) == (True, None)
    cpu_cloudwatch = guard.CloudWatchBalance(str(path), "cpu")
    cpu_cloudwatch.reset(bank)
    shown = guard.status(
        RUNNING,
        "healthy",
        "nvme1n1",
        gp2(),
        guard.CloudWatchBalance(""),
        bank,
        cpu_cloudwatch,
        guard.Rates(0.0, 0.0, 0.0, 0.1),
    )
    assert (shown["cpu_credits"], shown["cpu_cloudwatch_credits"]) == (412.5, 412.5)
    assert shown["cpu_cloudwatch_datapoint_at"] == 1000.0
    assert metric_values(guard.metrics(shown))[
        "shoestring_guard_cloudwatch_cpu_credit_balance"
    ] == (412.5)


def test_with_the_cpu_rule_off_no_bank_is_published_only_the_cpu_used():
    shown, text = published(None)
    assert shown["cpu_credits"] is None
    assert shown["cpu"] == "CPU credits not watched (guard_cpu_credits false)"
    values = metric_values(text)
    assert "shoestring_guard_cpu_credits" not in values
    assert "shoestring_guard_cloudwatch_cpu_credit_balance" not in values
    assert values["shoestring_guard_cpu_vcpus_used"] == 1.25
