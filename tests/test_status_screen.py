"""shoestring-status's decisions, off the host (roles/status/files/shoestring_status.py): what
is a problem in each section, and how the app's half comes from one run of the app's status
command. The sections around them only read systemd, /proc, the disk, the guard's state file,
the backups and the certificate; the whole screen runs on the converged host
(molecule/default/tests/test_status.py), which reads the problem lines checked here."""

import json

import pytest

from tests.role_files import load

status = load("status", "shoestring_status")


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (5, "5s ago"),
        (119, "119s ago"),
        (120, "2m ago"),
        (7199, "120m ago"),
        (7200, "2.0h ago"),
        (172799, "48.0h ago"),
        (172800, "2.0d ago"),
    ],
)
def test_ago(seconds, shown):
    assert status.ago(seconds) == shown


# Units.


def unit(active, sub, kind="simple", name="shoestring-beat.service"):
    return {"Id": name, "ActiveState": active, "SubState": sub, "Type": kind}


@pytest.mark.parametrize(
    ("shown", "problems"),
    [
        (unit("active", "running"), []),
        (unit("inactive", "dead"), ["shoestring-beat.service is inactive/dead"]),
        (unit("failed", "failed"), ["shoestring-beat.service is failed/failed"]),
        (
            unit("activating", "auto-restart"),
            ["shoestring-beat.service is activating/auto-restart"],
        ),
        # The backup between its runs: a oneshot job is inactive, and that is fine...
        (unit("inactive", "dead", "oneshot", "shoestring-backup.service"), []),
        (unit("active", "exited", "oneshot", "shoestring-backup.service"), []),
        # ...but not when it failed.
        (
            unit("failed", "failed", "oneshot", "shoestring-backup.service"),
            ["shoestring-backup.service is failed/failed"],
        ),
    ],
    ids=["running", "stopped", "failed", "restarting", "idle-oneshot", "oneshot", "oneshot-failed"],
)
def test_a_unit_that_is_not_active_is_a_problem_unless_an_idle_oneshot(shown, problems):
    assert status.unit_problems(shown) == problems


# Memory and disk.


def test_the_pressure_line_s_avg10():
    line = "some avg10=12.34 avg60=3.00 avg300=0.50 total=123456"
    assert status.pressure_some_avg10(line) == 12.34


@pytest.mark.parametrize(
    ("avg10", "problems"),
    [
        (9.99, []),
        (10.0, ["memory pressure: some avg10=10.0"]),
        (61.5, ["memory pressure: some avg10=61.5"]),
    ],
)
def test_memory_pressure_at_or_over_the_threshold_is_a_problem(avg10, problems):
    assert status.memory_pressure_problems(avg10, 10.0) == problems


@pytest.mark.parametrize(("used", "problem"), [(84, False), (85, True), (100, True)])
def test_a_disk_at_or_over_the_threshold_is_a_problem(used, problem):
    found = status.disk_problems("/var/lib/postgresql", used, 85)
    assert found == ([f"disk /var/lib/postgresql is {used}% full"] if problem else [])


# The guard.


def test_a_running_guard_that_read_the_disk_lately_is_no_problem():
    assert status.guard_problems({"paused": False, "reason": "healthy"}, 14.0) == []


def test_the_guard_s_problems_paused_cloudwatch_and_stale():
    state = {
        "paused": True,
        "reason": "burst balance 12.0% < 30%",
        "cloudwatch_error": "CloudWatch unreachable: timed out",
    }
    assert status.guard_problems(state, 121.0) == [
        "the guard cannot read CloudWatch: CloudWatch unreachable: timed out",
        "the guard paused bulk work: burst balance 12.0% < 30%",
        "the guard has not read the disk for 2m ago",
    ]


@pytest.mark.parametrize(("age", "stale"), [(120.0, False), (120.5, True)])
def test_a_guard_state_older_than_two_minutes_is_a_stopped_guard(age, stale):
    assert bool(status.guard_problems({"paused": False}, age)) is stale


@pytest.mark.parametrize(
    ("metric", "shown"),
    [
        ({"cloudwatch_metric": "BurstBalance"}, "BurstBalance"),
        ({"cloudwatch_metric": "EBSIOBalance%"}, "EBSIOBalance%"),
        ({}, "BurstBalance"),  # a guard from before gp3 was modelled
    ],
    ids=["gp2-volume", "gp3-instance", "older-guard"],
)
def test_the_guard_s_cloudwatch_line_names_the_metric_it_read(metric, shown):
    read = {
        "cloudwatch_asked": True,
        "cloudwatch_burst_balance_percent": 41.5,
        "cloudwatch_datapoint_at": 1000.0,
    }
    assert status.guard_cloudwatch_line(read | metric, now=1090.0) == (
        f"  CloudWatch's {shown} 41.5% (datapoint from 90s ago; the model was reset to it)"
    )
    not_yet = {"cloudwatch_asked": True, "cloudwatch_burst_balance_percent": None} | metric
    assert status.guard_cloudwatch_line(not_yet, now=1090.0) == (
        f"  CloudWatch's {shown}: no datapoint yet; the model alone"
    )


def test_the_guard_s_cloudwatch_line_says_why_it_could_not_ask_and_nothing_when_not_asked():
    failed = {"cloudwatch_asked": True, "cloudwatch_error": "CloudWatch unreachable: timed out"}
    assert status.guard_cloudwatch_line(failed, now=0.0) == (
        "  CloudWatch: CloudWatch unreachable: timed out; the model alone"
    )
    assert status.guard_cloudwatch_line({"cloudwatch_asked": False}, now=0.0) is None


# Backups and the certificate.


MAX_AGE_S = 26 * 3600


def test_no_backup_yet_is_a_problem_that_says_how_to_make_one():
    assert status.backup_age_problems(None, MAX_AGE_S) == [
        "no backup yet: systemctl start shoestring-backup.service"
    ]


@pytest.mark.parametrize(
    ("age", "problems"),
    [(3600.0, []), (MAX_AGE_S, []), (MAX_AGE_S + 1, ["the last backup is 26.0h ago"])],
)
def test_a_backup_older_than_the_maximum_age_is_a_problem(age, problems):
    assert status.backup_age_problems(age, MAX_AGE_S) == problems


@pytest.mark.parametrize(
    ("result", "problems"),
    [
        (None, []),
        ("success", []),
        ("exit-code", ["the last backup run failed: exit-code"]),
        ("timeout", ["the last backup run failed: timeout"]),
    ],
)
def test_a_failed_backup_run_is_a_problem(result, problems):
    assert status.backup_run_problems(result) == problems


@pytest.mark.parametrize(
    ("days", "problems"),
    [
        (90.0, []),
        (14.0, []),
        (13.6, ["the certificate expires in 14 days"]),
        (-1.2, ["the certificate expires in -1 days"]),
    ],
)
def test_a_certificate_expiring_within_the_warning_is_a_problem(days, problems):
    assert status.certificate_problems(days, 14) == problems


# The app's half: one run of `shoestring-manage status --json --sla ...`.


def test_each_queue_s_sla_is_an_argument_of_the_status_command():
    slas = {"interactive": 60, "maintenance": 300, "bulk": 3600}
    assert status.sla_arguments(slas) == [
        "--sla",
        "interactive=60",
        "--sla",
        "maintenance=300",
        "--sla",
        "bulk=3600",
    ]
    assert status.sla_arguments({}) == []


APP_TEXT = "\n".join(
    [
        "QUEUES        waiting  in flight  delayed  dead  oldest",
        "  interactive       0          -        -     -  unknown",
        "  bulk              3          -        -     -  75m",
        "  maintenance       0          -        -     -  unknown",
        "  held by workers (unacked, countdown/ETA tasks included): 0",
        "APP",
        "  campaigns running 1, people waiting on a rate limit 0",
        "  kill switches engaged: blocking.act_on_batch (rollback)",
    ]
)
APP_PROBLEMS = [
    "queue bulk: oldest message 4500s old, SLA 3600s",
    "kill switch engaged: blocking.act_on_batch",
]


def test_the_app_s_lines_and_problems_are_the_command_s_own():
    out = json.dumps({"queues": [], "problems": APP_PROBLEMS, "text": APP_TEXT})
    # Anything the command printed before its JSON (a warning) is not read.
    lines, problems = status.app_result(0, "a warning first\n" + out + "\n", "")
    assert lines == APP_TEXT.splitlines()
    assert problems == APP_PROBLEMS


def test_a_failed_status_command_is_a_problem_with_its_last_word():
    err = "Traceback (most recent call last):\n  ...\nredis.exceptions.ConnectionError: refused\n"
    assert status.app_result(1, "", err) == (
        ["APP", "  shoestring-manage status failed (see problems)"],
        ["the app's status failed: redis.exceptions.ConnectionError: refused"],
    )
    # A timeout (run() answers 1 and the error) and a silent failure.
    assert status.app_result(1, "", "Command timed out after 60 seconds")[1] == [
        "the app's status failed: Command timed out after 60 seconds"
    ]
    assert status.app_result(2, "", "")[1] == ["the app's status failed: ?"]


def test_the_app_section_runs_the_status_command_once_with_the_slas(monkeypatch, tmp_path):
    manage = tmp_path / "shoestring-manage"
    manage.touch()
    calls = []

    def run(*command, timeout=30):
        calls.append((command, timeout))
        return 0, json.dumps({"problems": APP_PROBLEMS, "text": APP_TEXT}), ""

    monkeypatch.setattr(status, "run", run)
    problems = ["nginx.service is failed/failed"]
    config = {"manage": str(manage), "queue_sla_s": {"bulk": 3600}}
    assert status.app_section(config, problems) == APP_TEXT.splitlines()
    assert calls == [((str(manage), "status", "--json", "--sla", "bulk=3600"), 60)]
    assert problems == ["nginx.service is failed/failed", *APP_PROBLEMS]


def test_an_older_release_s_status_command_is_shown_as_it_draws_it(monkeypatch, tmp_path):
    """After a rollback to a release whose command takes no --sla: its own screen, once
    more without options, and the SLAs said to be unchecked."""
    manage = tmp_path / "shoestring-manage"
    manage.touch()
    calls = []

    def run(*command, timeout=30):
        calls.append(command)
        if "--sla" in command:
            return 2, "", "manage.py status: error: unrecognized arguments: --sla bulk=3600\n"
        return 0, "queue  waiting\nbulk   3\n", ""

    monkeypatch.setattr(status, "run", run)
    problems = []
    config = {"manage": str(manage), "queue_sla_s": {"bulk": 3600}}
    assert status.app_section(config, problems) == ["APP", "  queue  waiting", "  bulk   3"]
    assert calls[1] == (str(manage), "status")
    assert problems == [status.OLDER_RELEASE]


def test_no_app_on_this_host_no_app_section(tmp_path):
    problems = []
    config = {"manage": str(tmp_path / "absent"), "queue_sla_s": {}}
    assert status.app_section(config, problems) == []
    assert problems == []
