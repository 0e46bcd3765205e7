"""Helpers the on-host tests share: settings files, units, the journal, the broker and
campaigns run against the fake Bluesky server."""

import json
import re
import time
from urllib.parse import unquote, urlsplit

from tests.polling import wait_until

FAKE = "http://127.0.0.1:8787"
# Left on the host by a test that provisions it with other variables, before it does;
# removed once site.yml has made it the converged host again (conftest's host_as_converged).
REPROVISIONED_MARK = "/var/lib/shoestring-tests/reprovisioned"


def env_file(host, path):
    """A root-only settings file, parsed (the tests run as root)."""
    return dict(re.findall(r'^([A-Z_]+)="(.*)"$', host.file(path).content_string, re.MULTILINE))


def broker_url(host):
    # Every workers host has a bulk pool; only one runs beat.
    return env_file(host, "/etc/shoestring/worker-bulk.env")["CELERY_BROKER_URL"]


def broker_is_redis(host):
    """False on a host whose broker is SQS (no Redis installed there)."""
    return broker_url(host).startswith("redis://")


def redis_cli(host, *args):
    """redis-cli as Celery's broker user (the credentials the services hold)."""
    url = urlsplit(broker_url(host))
    user = f"--user {url.username} " if url.username else ""
    return host.run(
        f"REDISCLI_AUTH=%s redis-cli -h %s -p %s {user}" + " ".join(["%s"] * len(args)),
        unquote(url.password),
        url.hostname,
        str(url.port or 6379),
        *args,
    )


def unit_props(host, unit, *names):
    args = " ".join(f"-p {name}" for name in names)
    out = host.check_output(f"systemctl show {args} {unit}")
    return dict(line.split("=", 1) for line in out.splitlines())


def main_pid(host, unit):
    return int(host.check_output("systemctl show -P MainPID %s", unit))


def host_time(host):
    return float(host.check_output("date +%s.%N"))


def invocation(host, unit):
    """The unit's current invocation ID: each start of a unit gets a new one."""
    return host.check_output("systemctl show -P InvocationID %s", unit)


def journal(host, unit, since):
    """(time, invocation ID, message) of every line the unit logged since a host time."""
    out = host.check_output(
        "journalctl -u %s --since @%s -o json --output-fields=MESSAGE,_SYSTEMD_INVOCATION_ID",
        unit,
        f"{since:.6f}",
    )
    entries = []
    for line in out.splitlines():
        entry = json.loads(line)
        message = entry.get("MESSAGE")
        if isinstance(message, list):  # journald stores non-UTF-8 messages as bytes
            message = bytes(message).decode(errors="replace")
        entries.append(
            (
                int(entry["__REALTIME_TIMESTAMP"]) / 1e6,
                entry.get("_SYSTEMD_INVOCATION_ID", ""),
                message or "",
            )
        )
    return entries


def wait_for_log(host, unit, since, pattern, timeout):
    """The first journal line of the unit since a host time that matches, as
    (time, invocation ID, match), waiting for it up to timeout seconds."""
    regex = re.compile(pattern)

    def find():
        for when, invocation_id, message in journal(host, unit, since):
            match = regex.search(message)
            if match:
                return when, invocation_id, match
        return None

    return wait_until(
        find, timeout, interval=1, message=f"{unit} to log a line matching {pattern!r}"
    )


def fake_call(host, method, path, payload=None, fake=FAKE):
    """The fake's API from `host` (on loopback there, or at its own host's address)."""
    command = "curl -sf -X %s " + fake + path
    if payload is None:
        return json.loads(host.check_output(command, method))
    return json.loads(host.check_output(command + " -d %s", method, json.dumps(payload)))


SETUP = """
from django.contrib.auth import get_user_model
from blocking import buckets, tasks
from blocking.models import Campaign, LinkedAccount
user, _ = get_user_model().objects.get_or_create(username="molecule-e2e")
buckets.bucket_for(user)
account = LinkedAccount(user=user, handle="victim.fake.test", did="{did}",
                        service_url="{fake}")
account.app_password = "app-pass-molecule"
account.save()
assert buckets.debit(user, {count})
campaign = Campaign.objects.create(user=user, target_handle="crowd-{count}.fake.test",
    target_did="{target_did}", action="block", scope="followers",
    expected={count}, tokens_debited={count})
tasks.start_campaign.delay(campaign.pk)
print(campaign.pk)
"""


def manage_shell(host, code):
    """Run Python in the web app's Django shell; its last line of output."""
    return host.check_output("shoestring-manage shell --no-imports -c %s", code).splitlines()[-1]


class ArmedShell:
    """Python for the web app's Django shell, started now and run on fire(arg): Django's
    start-up takes seconds on a loaded host, too long for code that must run at a given
    moment (while a worker drains). The code sees fire's argument as `arg`; the lines it
    prints are fire's answer. A context manager: leaving it ends the shell."""

    def __init__(self, host, name, code, timeout=120):
        self.host = host
        folder = f"/var/lib/shoestring-tests/armed-{name}"
        self.go, self.out = f"{folder}/go", f"{folder}/out"
        script = (
            "import os, sys, time\n"
            "print('armed', flush=True)\n"
            f"while not os.path.exists({self.go!r}): time.sleep(0.02)\n"
            f"arg = open({self.go!r}).read()\n"
            f"{code}\n"
        )
        host.check_output("rm -rf %s && mkdir -p -m 0755 %s", folder, folder)
        # What it prints apart from its log (the app's start-up lines go to stderr).
        self.pid = host.check_output(
            "setsid nohup shoestring-manage shell --no-imports -c %s >%s 2>%s.log </dev/null &"
            " echo $!",
            script,
            self.out,
            self.out,
        )
        wait_until(
            lambda: self.output()[:1] == ["armed"],
            timeout,
            message=f"the Django shell {name} to start (see {self.out} and {self.out}.log)",
        )

    def output(self):
        return self.host.run("cat %s", self.out).stdout.splitlines()

    def fire(self, arg, lines, timeout=60):
        """Run the code with `arg`; returns the first `lines` lines it prints."""
        self.host.check_output(
            "echo -n %s > %s.new && mv %s.new %s", arg, self.go, self.go, self.go
        )
        return wait_until(
            lambda: self.output()[1 : lines + 1] if len(self.output()) > lines else None,
            timeout,
            message=f"the armed shell to print {lines} lines (its output: {self.out})",
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.host.run("kill -- -%s", self.pid)


def start_campaign(host, count, fake=FAKE, **fake_config):
    """A fresh person with a linked fake account blocks the followers of crowd-<count>."""
    account = fake_call(
        host,
        "POST",
        "/_fake/accounts",
        {"handle": "victim.fake.test", "password": "app-pass-molecule"},
        fake=fake,
    )
    fake_call(host, "POST", "/_fake/config", fake_config, fake=fake)
    host.run(
        "shoestring-manage shell --no-imports -c %s",
        "from django.contrib.auth import get_user_model;"
        " get_user_model().objects.filter(username='molecule-e2e').delete()",
    )
    # DIDs look like real did:plc ones: ask the fake, as a client would.
    target = fake_call(
        host,
        "GET",
        f"/xrpc/com.atproto.identity.resolveHandle?handle=crowd-{count}.fake.test",
        fake=fake,
    )
    return manage_shell(
        host, SETUP.format(did=account["did"], count=count, fake=fake, target_did=target["did"])
    )


def wait_for_campaign(host, campaign_id, timeout):
    status = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = manage_shell(
            host,
            "from blocking.models import Campaign;"
            f" print(Campaign.objects.get(pk={campaign_id}).status)",
        )
        if status != "running":
            break
        time.sleep(2)
    return status


def blocked_once(host, count, fake=FAKE):
    state = fake_call(host, "GET", "/_fake/state?handle=victim.fake.test", fake=fake)
    assert state["block_count"] == state["distinct_blocked"] == count
    assert state["duplicates"] == 0
    return state
