"""The runbook is executed: every command in a ```sh block of docs/runbook.md runs on the
converged host, in the runbook's order, and its output must say what the runbook says it will.
A command that cannot run here says why (interactive, a placeholder the operator fills in, the
controller's) and names the test that covers it instead; a destructive one runs against a
throwaway target."""

import re
from pathlib import Path

import pytest
from shoestring_host import wait_until

RUNBOOK = Path(__file__).resolve().parents[3] / "docs" / "runbook.md"

# What a command's output must show (a regular expression, searched case-insensitively).
EXPECT = {
    "shoestring-status": r"^PROBLEMS:",
    "shoestring-manage status --json": r'"queues": \[',
    "shoestring-manage status": r"^QUEUES +waiting",
    "curl -sk https://localhost/healthz": r"^ok$",
    "systemctl --failed": r"0 loaded units listed",
    "systemctl show -p NRestarts -p Result postgresql@15-main.service": r"^NRestarts=\d+$",
    "cat /run/shoestring-guard/state.json": r'"paused": (true|false)',
    "curl -s http://127.0.0.1:9090/api/v1/alerts": r'"status":"success"',
    "curl -s http://127.0.0.1:9100/metrics | grep ^shoestring_guard": (
        r"^shoestring_guard_burst_balance_percent [0-9.]+$"
    ),
    "curl -s http://127.0.0.1:9808/metrics | grep -E '^shoestring_(queue|people|kill|address)'": (
        r'^shoestring_queue_messages\{queue="bulk",state="waiting"\} \d+'
    ),
    "curl -s http://127.0.0.1:9121/metrics | grep -E '^redis_(up|connected_clients) '": (
        r"^redis_up 1$"
    ),
    "promtool check rules /etc/prometheus/shoestring.rules.yml": r"SUCCESS: \d+ rules found",
    "grep oom_kill /proc/vmstat": r"^oom_kill \d+$",
    # The CloudWatch reading runs only where a volume id is set (the sqs scenario).
    "systemctl list-timers shoestring-cloudwatch.timer": (
        r"(shoestring-cloudwatch\.service|^0 timers listed)"
    ),
    "ls -l /var/backups/shoestring": r"^total \d+",
    "systemctl list-timers shoestring-backup.timer": r"shoestring-backup\.service",
    "journalctl -u shoestring-backup.service -n 5 -o cat": r"",
    "runuser -u postgres -- psql -l": r"^ shoestring +\| shoestring_owner",
    "grep -c SHOESTRING_CREDENTIALS_KEY /etc/shoestring/shoestring.env": r"^1$",
    "journalctl --disk-usage": r"take up [0-9.]+[KMG]",
    "systemctl show -p MemoryCurrent -p MemoryHigh -p MemoryMax shoestring-web.service": (
        r"^MemoryMax=\d+$"
    ),
    'runuser -u postgres -- psql -c "SHOW synchronous_commit"': r"^ off$",
    "shoestring-manage check --deploy": r"System check identified no issues",
    "shoestring-manage showmigrations blocking": r"\[X\] 0001_initial",
    "shoestring-manage --owner migrate": r"No migrations to apply",
    "ls -l /etc/shoestring": r"^-rw------- 1 root root .* shoestring\.env$",
    "systemctl show -p User -p EnvironmentFiles shoestring-worker-bulk.service": (
        r"^User=shoestring-worker-bulk$"
    ),
    "nft list ruleset": r"tcp dport",
    "sshd -T": r"^passwordauthentication no$",
    "curl -sk -D - -o /dev/null https://localhost/healthz": r"^x-shoestring-release: \d{8}T",
    "readlink /opt/shoestring/current": r"releases/\d{8}T\d{6}Z-[0-9a-f]+$",
    "systemctl list-dependencies shoestring.target": r"shoestring-worker-bulk\.service",
    "certbot certificates": r"Certificate Name: ",
    "grep ^server /etc/letsencrypt/renewal/*.conf": r"^server = https://",
    "shoestring-manage axes_list_attempts": r"",
}
# Destructive ones run against a throwaway target: the runbook's text -> what runs here.
THROWAWAY = {
    "task_name='blocking.act_on_batch'": "task_name='runbook.throwaway'",
}
# Not run here, and why.
NOT_RUN = {
    "redis-cli -h 127.0.0.1 --askpass info memory": "asks for the password (interactive)",
    "shoestring-manage createsuperuser": "interactive; test_browser_journey signs people up",
    "staff_totp <username>": (
        "a placeholder the operator fills in; test_front_door gives staff an authenticator"
        " and signs in to the admin with its code"
    ),
    "shoestring-manage changepassword alice": "interactive",
    "ansible-playbook": "runs on the controller; test_release runs site.yml and the rollback",
    "<UTC time>": "a placeholder the operator fills in; test_backup restores for real",
    "<domain>": "a placeholder the operator fills in; test_certificate reads the served serial",
    "certbot renew --force-renewal": "test_certificate forces one, checks what nginx serves",
    # A dry run always asks Let's Encrypt's staging CA, whatever issued the certificate (it
    # tried, from the sqs host, once): the tests never address a host off this machine.
    "certbot renew --dry-run": "asks Let's Encrypt's staging CA, off this machine",
    # The "Alarms" section's AWS CLI lines: the operator's machine, never the host.
    "aws cloudwatch ": (
        "runs on the operator's machine with AWS credentials; tests/test_aws.py reads the"
        " alarms back"
    ),
    "aws ec2 ": (
        "runs on the operator's machine with AWS credentials; tests/test_aws.py checks the"
        " credit mode the instance is launched with"
    ),
    "aws sqs ": (
        "runs on the operator's machine with AWS credentials; tests/test_aws.py reads the queues"
        " and their redrive policy back"
    ),
}
# Only where nginx_domain got a certificate (the sqs scenario; the default one has none).
CERTBOT_ONLY = ("certbot ", "grep ^server /etc/letsencrypt/")
# shoestring-status exits 1 when it lists a problem; a first release has no PREVIOUS.
ALLOWED_RC_1 = {"shoestring-status", "cat /opt/shoestring/current/PREVIOUS"}
REDIS_ONLY = (
    "redis-cli",
    "grep '^user default' /etc/redis/redis.conf",
    "curl -s http://127.0.0.1:9121/",
)


def runbook_lines():
    text = RUNBOOK.read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    return [line for line in "\n".join(blocks).splitlines() if line.strip()]


def not_run_reason(line):
    return next((why for text, why in NOT_RUN.items() if text in line), None)


def test_the_runbook_has_commands_and_checks_most_of_them():
    lines = runbook_lines()
    assert len(lines) >= 40
    checked = [line for line in lines if line in EXPECT]
    assert len(checked) >= 25
    # Every expectation belongs to a command the runbook still has.
    assert set(EXPECT) <= set(lines), set(EXPECT) - set(lines)


@pytest.fixture(scope="module")
def broker_is_redis(host):
    return 'CELERY_BROKER_URL="redis://' in host.file("/etc/shoestring/beat.env").content_string


@pytest.fixture
def throwaway_kill_switch(host):
    yield
    host.run(
        "shoestring-manage shell -c %s",
        "from blocking.models import KillSwitch;"
        " KillSwitch.objects.filter(task_name='runbook.throwaway').delete()",
    )


def test_every_runbook_command_runs_on_the_host_and_says_what_it_should(
    host, broker_is_redis, throwaway_kill_switch
):
    ran, skipped = 0, []
    for line in runbook_lines():
        reason = not_run_reason(line)
        if reason is None and line.startswith(REDIS_ONLY) and not broker_is_redis:
            reason = "no Redis on a host whose broker is SQS"
        if reason is None and line.startswith(CERTBOT_ONLY) and not host.exists("certbot"):
            reason = "no domain, so no certbot, on this host (the sqs scenario has one)"
        if reason:
            skipped.append(f"{line}  ({reason})")
            continue
        command = line
        for text, throwaway in THROWAWAY.items():
            command = command.replace(text, throwaway)
        if not broker_is_redis:
            command = command.replace(" redis-server.service", "")
        result = host.run(command)
        # A host's first release has no PREVIOUS (nothing ran before it).
        allowed = (0, 1) if command in ALLOWED_RC_1 else (0,)
        assert result.rc in allowed, f"{line}\nrc={result.rc}\n{result.stdout}\n{result.stderr}"
        expected = EXPECT.get(line)
        if expected:
            assert re.search(expected, result.stdout, re.MULTILINE | re.IGNORECASE), (
                f"{line}\ndid not print {expected!r}:\n{result.stdout[-2000:]}"
            )
        if "systemctl restart shoestring-web.service" in command:
            assert wait_until(
                lambda: host.run("curl -sk https://localhost/healthz").stdout.strip() == "ok", 30
            )
        ran += 1
    print(f"\nran {ran} runbook commands; not run here:")
    print("\n".join(f"  {line}" for line in skipped))
    assert ran >= 50
