"""Each service gets only its own secrets, enforced by the kernel: every service runs as
its own user; no service's user can read any settings file (systemd reads them as root)
or another service's process environment; inside its sandbox the settings directory is
masked; the maintenance pool and beat hold no Bluesky credentials key at all; the broker
account cannot reconfigure, wipe or debug the broker; and no database login but the owner
may create schemas, tables or temporary tables."""

from urllib.parse import urlsplit

import pytest
from shoestring_host import broker_is_redis, broker_url, env_file, main_pid, redis_cli

SETTINGS = {
    "shoestring-web.service": "shoestring.env",
    "shoestring-worker-interactive.service": "worker-interactive.env",
    "shoestring-worker-bulk.service": "worker-bulk.env",
    "shoestring-worker-maintenance.service": "worker-maintenance.env",
    "shoestring-beat.service": "beat.env",
}


def user_of(host, unit):
    return host.check_output("systemctl show -P User %s", unit)


def environment_of(host, unit):
    """The running main process's environment, read as root."""
    pid = str(main_pid(host, unit))
    return host.check_output("tr '\\0' '\\n' < /proc/%s/environ", pid).splitlines()


def test_each_service_runs_as_its_own_user(host):
    users = {unit: user_of(host, unit) for unit in SETTINGS}
    assert users == {unit: unit.removesuffix(".service") for unit in SETTINGS}
    for unit, user in users.items():
        pid = str(main_pid(host, unit))
        assert host.check_output("stat -c %%U /proc/%s", pid) == user, unit


@pytest.mark.parametrize("unit", SETTINGS)
def test_no_service_user_can_read_any_settings_file(host, unit):
    user = user_of(host, unit)
    for settings in [*SETTINGS.values(), "owner.env"]:
        path = f"/etc/shoestring/{settings}"
        assert host.file(path).exists, path
        result = host.run("runuser -u %s -- cat %s", user, path)
        assert result.rc != 0, f"{user} read {path}"
        assert "Permission denied" in result.stderr


@pytest.mark.parametrize("unit", SETTINGS)
def test_no_service_user_can_read_another_services_environment(host, unit):
    user = user_of(host, unit)
    for other in SETTINGS:
        if other == unit:
            continue
        pid = str(main_pid(host, other))
        result = host.run("runuser -u %s -- cat /proc/%s/environ", user, pid)
        assert result.rc != 0, f"{user} read the environment of {other}"


@pytest.mark.parametrize("unit", SETTINGS)
def test_inside_its_sandbox_the_settings_directory_is_masked(host, unit):
    pid = str(main_pid(host, unit))
    # InaccessiblePaths= mounts systemd's empty, mode-000 node over it in the unit's namespace.
    mounts = [
        line.split()[3:5]
        for line in host.file(f"/proc/{pid}/mountinfo").content_string.splitlines()
    ]
    assert ["/systemd/inaccessible/dir", "/etc/shoestring"] in mounts
    assert host.check_output("stat -c %a /etc/shoestring") == "700"


def test_only_the_network_pools_and_the_web_app_hold_the_credentials_key(host):
    key = env_file(host, "/etc/shoestring/shoestring.env")["SHOESTRING_CREDENTIALS_KEY"]
    for unit, settings in SETTINGS.items():
        holds = unit in {
            "shoestring-web.service",
            "shoestring-worker-interactive.service",
            "shoestring-worker-bulk.service",
        }
        in_file = "SHOESTRING_CREDENTIALS_KEY" in env_file(host, f"/etc/shoestring/{settings}")
        in_process = any(key in line for line in environment_of(host, unit))
        assert (in_file, in_process) == (holds, holds), unit


def test_each_service_logs_in_to_the_database_as_its_own_role(host):
    logins = {}
    for unit, settings in SETTINGS.items():
        values = env_file(host, f"/etc/shoestring/{settings}")
        if "DATABASE_USER" in values:
            logins[unit] = (values["DATABASE_USER"], values["DATABASE_PASSWORD"])
    assert "shoestring-beat.service" not in logins
    assert len({user for user, _ in logins.values()}) == len(logins) == 4
    assert len({password for _, password in logins.values()}) == 4


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TEMPORARY TABLE intruder (id int)",
        "CREATE SCHEMA intruder",
        "CREATE TABLE public.intruder (id int)",
    ],
)
def test_no_runtime_role_can_create_schemas_tables_or_temporary_tables(host, psql_as, sql):
    for settings in ["shoestring.env", "worker-bulk.env", "worker-maintenance.env"]:
        values = env_file(host, f"/etc/shoestring/{settings}")
        result = psql_as(values["DATABASE_USER"], values["DATABASE_PASSWORD"], sql)
        assert result.rc != 0, (settings, sql)
        assert "permission denied" in result.stderr, result.stderr


def test_the_guards_role_logs_in_by_peer_only_and_touches_its_table_only(host):
    # As its own system user over the socket: in, and it may read the pauses.
    guard = "runuser -u shoestring-guard -- psql -d shoestring -U shoestring_guard -Atc %s"
    assert host.run(guard, "SELECT count(*) >= 0 FROM core_bulkpause").stdout.strip() == "t"
    denied = host.run(guard, "SELECT count(*) FROM blocking_linkedaccount")
    assert denied.rc != 0
    assert "permission denied" in denied.stderr, denied.stderr
    # With a password, over TCP (TLS or not) or the socket: turned away before any password
    # is asked (a guessed or leaked one would be worth nothing).
    for where, database in [("127.0.0.1", "shoestring"), ("/var/run/postgresql", "postgres")]:
        refused = host.run(
            "PGPASSWORD=guess psql -h %s -U shoestring_guard -d %s -Atc 'SELECT 1'", where, database
        )
        assert refused.rc != 0, where
        assert "pg_hba.conf rejects connection" in refused.stderr, refused.stderr


FORBIDDEN_TO_CELERY = [
    ["config", "get", "maxmemory"],
    ["config", "set", "appendonly", "yes"],
    ["flushall"],
    ["flushdb"],
    ["keys", "*"],
    ["acl", "list"],
    ["debug", "sleep", "0"],
]


def test_the_broker_account_cannot_reconfigure_wipe_or_debug_the_broker(host):
    if not broker_is_redis(host):
        pytest.skip("the broker is SQS in this scenario")
    celery = urlsplit(broker_url(host)).username
    operator = host.check_output(
        "sed -n 's/^user default on >\\([^ ]*\\) .*/\\1/p' /etc/redis/redis.conf"
    )

    def dry_run(*command):
        return host.check_output(
            "REDISCLI_AUTH=%s redis-cli -h 127.0.0.1 acl dryrun %s "
            + " ".join(["%s"] * len(command)),
            operator,
            celery,
            *command,
        )

    assert redis_cli(host, "llen", "bulk").stdout.strip().isdigit()
    for command in [["lpush", "bulk", "x"], ["brpop", "bulk", "1"], ["publish", "c", "m"]]:
        assert dry_run(*command) == "OK", command
    for command in FORBIDDEN_TO_CELERY:
        assert "no permissions" in dry_run(*command), command
        if command[0] != "debug":  # Redis refuses DEBUG to every client unless configured
            result = redis_cli(host, *command)
            assert "NOPERM" in result.stdout + result.stderr, command
