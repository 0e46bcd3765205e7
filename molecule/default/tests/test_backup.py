"""Backups with a tested restore (roles/backup): the nightly pg_dump runs as its own user at
the lowest priority, keeps N days, and `shoestring-restore` brings a destroyed database back
from it: the app answers and the data, credentials included, is back."""

import json
import re
import secrets

import pytest
from shoestring_host import manage_shell, unit_props, wait_until

BACKUP_DIR = "/var/backups/shoestring"
PROBE = "backup-probe"

MAKE_DATA = """
from django.contrib.auth import get_user_model
from blocking.models import LinkedAccount
user = get_user_model().objects.create_user({username!r}, password="not-used-here")
account = LinkedAccount(user=user, handle="probe.fake.test", did="did:plc:backupprobe",
                        service_url="http://127.0.0.1:8787")
account.app_password = {app_password!r}
account.save()
print(user.pk)
"""

READ_DATA = """
from django.contrib.auth import get_user_model
from blocking.models import LinkedAccount
users = get_user_model().objects
account = LinkedAccount.objects.filter(user__username={username!r}).first()
print(users.filter(username={username!r}).count(), users.filter(username={later!r}).count(),
      account.app_password if account else "-")
"""


def healthz_code(host):
    return host.run(
        "curl -sk -o /dev/null -m 5 -w '%{http_code}' https://localhost/healthz"
    ).stdout.strip()


def dumps(host):
    return host.check_output("ls -1t %s", BACKUP_DIR).split()


def databases(host):
    return host.check_output(
        "runuser -u postgres -- psql -XAtc 'SELECT datname FROM pg_database ORDER BY 1'"
    ).split()


def delete_users(host, *usernames):
    host.run(
        "shoestring-manage shell --no-imports -c %s",
        "from django.contrib.auth import get_user_model;"
        f" get_user_model().objects.filter(username__in={list(usernames)!r}).delete()",
    )


@pytest.fixture
def probe_data(host):
    app_password = "restore-" + secrets.token_hex(8)
    delete_users(host, PROBE, "after-backup")
    manage_shell(host, MAKE_DATA.format(username=PROBE, app_password=app_password))
    yield app_password
    # A test that failed between destroying the database and restoring it must not leave
    # the host without one (or its services stopped) for every test after it.
    if "shoestring" not in databases(host):
        host.run("shoestring-restore %s/%s", BACKUP_DIR, dumps(host)[0])
    host.run("systemctl start shoestring-web.socket shoestring.target")
    delete_users(host, PROBE, "after-backup")
    for name in databases(host):
        if "_before_restore_" in name:
            host.run("runuser -u postgres -- dropdb %s", name)


def test_the_backup_runs_nightly_as_its_own_user_at_the_lowest_priority(host):
    timer = host.service("shoestring-backup.timer")
    assert timer.is_enabled
    assert timer.is_running
    assert host.check_output("systemctl show -P NextElapseUSecRealtime shoestring-backup.timer")
    props = unit_props(
        host, "shoestring-backup.service", "User", "Nice", "IOSchedulingClass", "Restart"
    )
    assert props["User"] == "shoestring-backup"
    assert props["Nice"] == "19"
    assert props["IOSchedulingClass"] in ("3", "idle")
    assert props["Restart"] == "no"
    directory = host.file(BACKUP_DIR)
    assert (directory.user, directory.mode) == ("shoestring-backup", 0o700)


def test_the_backup_role_may_read_but_never_change_the_data(host):
    sql = (
        "SELECT pg_has_role('shoestring_backup', 'pg_read_all_data', 'member'),"
        " pg_has_role('shoestring_backup', 'pg_write_all_data', 'member'),"
        " has_table_privilege('shoestring_backup', 'blocking_linkedaccount', 'UPDATE')"
    )
    out = host.check_output("runuser -u postgres -- psql -XAt -d shoestring -c %s", sql)
    assert out == "t|f|f"


def test_a_backup_restores_into_a_fresh_database_and_the_app_has_its_data_back(host, probe_data):
    stale = f"{BACKUP_DIR}/shoestring-20000101T000000Z.dump"
    host.check_output("touch -d '30 days ago' %s && chown shoestring-backup: %s", stale, stale)
    started = host.check_output("date +%s")
    backup = host.run("systemctl start shoestring-backup.service")
    assert backup.rc == 0, host.check_output(
        "journalctl -u shoestring-backup.service --since @%s -o cat", started
    )
    log = host.check_output("journalctl -u shoestring-backup.service --since @%s -o cat", started)
    print("\n" + log)
    written = re.search(r"backup: wrote (\S+\.dump) \((\d+) bytes", log)
    assert written, log
    dump = written[1]
    assert "removed 1: shoestring-20000101T000000Z.dump" in log
    assert dumps(host)[0] == dump.rsplit("/", 1)[1]
    assert "shoestring-20000101T000000Z.dump" not in dumps(host)
    listing = host.check_output("pg_restore --list %s", dump)
    assert "TABLE DATA public blocking_linkedaccount" in listing

    # Data made after the backup is not in it; the restore must bring back the dump's state.
    manage_shell(
        host,
        "from django.contrib.auth import get_user_model;"
        " print(get_user_model().objects.create_user('after-backup').pk)",
    )

    # Destroy the database.
    host.check_output("systemctl stop shoestring-web.socket shoestring.target")
    host.check_output("runuser -u postgres -- dropdb --force shoestring")
    assert "shoestring" not in databases(host)
    host.check_output("systemctl start shoestring-web.socket shoestring.target")
    wait_until(
        lambda: healthz_code(host) == "503", 30, message="the app answered without its database"
    )

    restore = host.run("shoestring-restore %s", dump)
    print(restore.stdout)
    assert restore.rc == 0, restore.stdout + restore.stderr
    assert f"restored {dump} into a fresh database shoestring" in restore.stdout
    wait_until(
        lambda: healthz_code(host) == "200", 30, message="the app did not answer after the restore"
    )

    # The data is back, the credential readable with the host's key; later data is not.
    assert (
        manage_shell(host, READ_DATA.format(username=PROBE, later="after-backup"))
        == f"1 0 {probe_data}"
    )
    # Every role's rights came back with the database.
    rights = host.check_output(
        "runuser -u postgres -- psql -XAt -d shoestring -c %s",
        "SELECT has_database_privilege('shoestring_web', 'shoestring', 'CONNECT'),"
        " has_database_privilege('public', 'shoestring', 'CONNECT'),"
        " has_table_privilege('shoestring_worker_bulk', 'blocking_actionrecord', 'INSERT'),"
        " has_column_privilege('shoestring_worker_bulk', 'blocking_linkedaccount',"
        " 'service_url', 'UPDATE'),"
        " has_table_privilege('shoestring_worker_maintenance', 'blocking_linkedaccount', 'SELECT')",
    )
    assert rights == "t|f|t|t|f"


def test_a_restore_over_a_live_database_keeps_the_old_one_aside(host, probe_data):
    dump = f"{BACKUP_DIR}/{dumps(host)[0]}"
    restore = host.run("shoestring-restore %s", dump)
    assert restore.rc == 0, restore.stdout + restore.stderr
    aside = re.search(
        r"moved the database shoestring aside as (shoestring_before_restore_\w+)", restore.stdout
    )
    assert aside, restore.stdout
    assert aside[1] in databases(host)
    assert wait_until(lambda: healthz_code(host) == "200", 30)


def test_a_file_that_is_not_a_dump_changes_nothing(host):
    restore = host.run("shoestring-restore /etc/hostname")
    assert restore.rc == 1
    assert "not a pg_dump archive" in restore.stderr
    assert healthz_code(host) == "200"


S3_CHECK = """
import boto3, json, os
s3 = boto3.client("s3", region_name=os.environ["BACKUP_S3_REGION"],
                  endpoint_url=os.environ["BACKUP_S3_ENDPOINT_URL"])
bucket, prefix = os.environ["BACKUP_S3_BUCKET"], os.environ["BACKUP_S3_PREFIX"]
objects = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
encryption = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
public = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
print(json.dumps({"prefix": prefix, "keys": {o["Key"]: o["Size"] for o in objects}, "rules": rules,
                  "encryption": encryption, "public": public}, default=str))
"""


def test_each_backup_is_copied_to_an_encrypted_private_bucket_that_expires_it(host):
    env = host.file("/etc/shoestring/backup.env").content_string
    if "BACKUP_S3_BUCKET=" not in env:
        pytest.skip("the S3 copy is proved where a bucket is set (the sqs scenario, moto_server)")
    host.check_output("systemctl start shoestring-backup.service")
    newest = dumps(host)[0]
    size = int(host.check_output("stat -c %%s %s/%s", BACKUP_DIR, newest))
    found = json.loads(
        host.check_output(
            "set -a && . /etc/shoestring/backup.env && python3 -c %s", S3_CHECK
        ).splitlines()[-1]
    )
    key = found["prefix"] + newest
    assert found["keys"].get(key) == size, f"{key} ({size} bytes) not in the bucket: {found}"
    (rule,) = found["rules"]
    assert rule["Status"] == "Enabled"
    assert rule["Expiration"]["Days"] >= 1
    algorithms = [
        r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
        for r in found["encryption"]["Rules"]
    ]
    assert algorithms == ["AES256"]
    assert all(found["public"].values()), f"public access not blocked: {found['public']}"
    log = host.check_output("journalctl -u shoestring-backup.service -n 20 -o cat")
    assert f"copied to s3://shoestring-molecule-backups/{key} in" in log
