"""Metrics every 15 s on loopback (roles/monitoring, roles/workers): every exporter answers only
on 127.0.0.1, nothing else listens beyond loopback but nginx and sshd; the app's exporter shows
task runs, blocks, queue depth, budgets and kill switches after a small campaign; the Redis
exporter (Redis hosts) shows the broker; the backup's textfile metric reaches the node exporter;
the local Prometheus scrapes every target, and `promtool` accepts the alert rules it has loaded;
and a measurement of the memory and the disk writes per minute the metrics stack and the guard
add (printed figures)."""

import json
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from shoestring_host import (
    blocked_once,
    broker_is_redis,
    env_file,
    start_campaign,
    wait_for_campaign,
    wait_until,
)

EXPORTERS = {
    "prometheus-node-exporter.service": 9100,
    "prometheus-postgres-exporter.service": 9187,
    "prometheus.service": 9090,
    "shoestring-metrics.service": 9808,
    "prometheus-redis-exporter.service": 9121,
}
REDIS_ONLY = {"prometheus-redis-exporter.service"}
# What may listen beyond loopback: nginx (HTTP, HTTPS) and sshd.
PUBLIC = {"nginx", "sshd"}


def exporters(host):
    return {
        unit: port
        for unit, port in EXPORTERS.items()
        if unit not in REDIS_ONLY or broker_is_redis(host)
    }


def scrape(host, port):
    """name -> {labels: value} of every sample an exporter serves, parsed as Prometheus would."""
    text = host.check_output("curl -sf http://127.0.0.1:%s/metrics", str(port))
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def one(samples, name, **labels):
    return samples.get(name, {}).get(tuple(sorted(labels.items())))


def prometheus(host, path):
    return json.loads(host.check_output("curl -sf http://127.0.0.1:9090%s", path))["data"]


@pytest.mark.parametrize(("unit", "port"), EXPORTERS.items())
def test_each_exporter_runs_and_listens_on_loopback_only(host, unit, port):
    if unit in REDIS_ONLY and not broker_is_redis(host):
        assert not host.service(unit).is_running
        pytest.skip(f"{unit} runs only where Redis is the broker")
    assert host.service(unit).is_running
    assert wait_until(lambda: host.socket(f"tcp://127.0.0.1:{port}").is_listening, 30)
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
    assert not host.socket(f"tcp://:::{port}").is_listening
    metrics = host.check_output("curl -sf http://127.0.0.1:%s/metrics", str(port))
    assert "# TYPE" in metrics


def test_prometheus_scrapes_every_target_every_15_seconds(host):
    config = prometheus(host, "/api/v1/status/config")["yaml"]
    assert "scrape_interval: 15s" in config

    def all_up():
        targets = prometheus(host, "/api/v1/targets")["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in targets}

    expected = {"prometheus", "node", "postgres", "shoestring"} | (
        {"redis"} if broker_is_redis(host) else set()
    )
    health = wait_until(
        lambda: set(all_up().values()) == {"up"} and all_up(), 60, message="every target up"
    )
    assert health == dict.fromkeys(expected, "up"), all_up()


def test_nothing_listens_beyond_loopback_but_nginx_and_sshd(host):
    beyond = []
    for line in host.check_output("ss -Hltunp").splitlines():
        # netid state recv-q send-q local peer process
        address = line.split()[4].rsplit(":", 1)[0].strip("[]")
        if address.startswith("127.") or address == "::1" or address.endswith("%lo"):
            continue
        process = line.split('users:(("', 1)[-1].split('"', 1)[0] if "users:" in line else "?"
        if process not in PUBLIC:
            beyond.append(line)
    assert not beyond, "listening beyond loopback:\n" + "\n".join(beyond)


def test_after_a_small_campaign_the_app_exporter_shows_tasks_blocks_queues_and_budgets(
    host, fake_bluesky
):
    before = scrape(host, 9808)
    blocks_before = one(before, "shoestring_network_actions_total", action="block") or 0
    campaign_id = start_campaign(
        host, 300, write_points_per_hour=1_000_000, write_points_per_day=1_000_000
    )
    assert wait_for_campaign(host, campaign_id, timeout=180) == "done"
    after = scrape(host, 9808)
    # The workers counted the 300 blocks (2 batches of 200 at most) and the tasks that made them.
    # The counter is the host's: work left by an earlier test may add to it, never take away.
    blocked_once(host, 300)
    assert one(after, "shoestring_network_actions_total", action="block") - blocks_before >= 300
    assert one(after, "shoestring_task_runs_total", task="blocking.act_on_batch", state="SUCCESS")
    batches = one(after, "shoestring_task_duration_seconds_count", task="blocking.act_on_batch")
    assert batches >= 2
    assert one(after, "shoestring_task_duration_seconds_sum", task="blocking.act_on_batch") > 0
    # The broker answered for every queue, the database for the rest.
    redis = broker_is_redis(host)
    for queue in ("interactive", "bulk", "maintenance"):
        waiting = one(after, "shoestring_queue_messages", queue=queue, state="waiting")
        assert waiting >= 0
        age = one(after, "shoestring_queue_oldest_message_age_seconds", queue=queue)
        if redis or waiting == 0:
            assert 0 <= age < 600, (queue, age)
        else:  # SQS: the age comes from CloudWatch, which moto does not fill
            assert age is None
        if not redis:
            assert one(after, "shoestring_queue_messages", queue=queue, state="in_flight") >= 0
            assert one(after, "shoestring_queue_messages", queue=queue, state="dead") >= 0
    for source in ("queues", "database", "guard", "certificate"):
        assert one(after, "shoestring_exporter_source_up", source=source) == 1, source
    # The bulk pool's budget is named by the host's egress address (its own, per host).
    address = env_file(host, "/etc/shoestring/worker-bulk.env")["SHOESTRING_EGRESS_ADDRESS"]
    assert address != "global-ip"
    tokens = one(after, "shoestring_address_budget_tokens", budget=address)
    assert 0 <= tokens <= one(after, "shoestring_address_budget_capacity", budget=address)
    assert one(after, "shoestring_people_rate_limited") >= 0
    assert one(after, "shoestring_kill_switches_engaged") >= 0
    assert one(after, "shoestring_bulk_pause_flag") in (0, 1)
    expires = one(after, "shoestring_certificate_expiry_timestamp_seconds")
    days_left = (expires - time.time()) / 86400
    assert 0 < days_left < 3660
    print(
        f"\napp exporter after the campaign: {batches:.0f} batch runs, tokens left {tokens:.0f},"
        f" certificate expires in {days_left:.0f} days"
    )


def test_the_redis_exporter_reads_the_broker_with_its_own_account(host):
    if not broker_is_redis(host):
        pytest.skip("no Redis where SQS is the broker")
    samples = scrape(host, 9121)
    assert one(samples, "redis_up") == 1
    assert one(samples, "redis_connected_clients") >= 1
    assert one(samples, "redis_memory_max_bytes") > 0  # CONFIG GET answered
    config = host.file("/etc/default/prometheus-redis-exporter")
    assert (config.user, config.group, config.mode) == ("root", "root", 0o600)
    props = host.check_output(
        "systemctl show -p ProtectSystem -p NoNewPrivileges -p MemoryMax "
        "prometheus-redis-exporter.service"
    )
    assert "ProtectSystem=strict" in props
    assert "NoNewPrivileges=yes" in props


def test_a_backup_publishes_its_time_for_the_node_exporter(host):
    assert host.run("systemctl start shoestring-backup.service").rc == 0
    last = wait_until(
        lambda: one(scrape(host, 9100), "shoestring_backup_last_success_timestamp_seconds"), 30
    )
    assert 0 <= time.time() - last < 600


def test_the_guard_and_the_database_are_in_prometheus(host):
    def value(query):
        result = prometheus(host, f"/api/v1/query?query={query}")["result"]
        return float(result[0]["value"][1]) if result else None

    assert wait_until(lambda: value("shoestring_guard_burst_balance_percent") is not None, 60)
    assert value("pg_up") == 1
    assert value("shoestring_guard_bulk_paused") in (0, 1)


def test_the_alert_rules_are_loaded(host):
    groups = prometheus(host, "/api/v1/rules")["groups"]
    names = {rule["name"] for group in groups for rule in group["rules"]}
    assert {
        "BurstBalanceLow",
        "MemoryPressureHigh",
        "OOMKill",
        "DiskSpaceLow",
        "QueueOverSLA",
        "CertificateExpiresSoon",
        "BackupTooOld",
    } <= names
    slas = {
        rule["labels"]["queue"]: rule["query"]
        for group in groups
        for rule in group["rules"]
        if rule["name"] == "QueueOverSLA"
    }
    assert set(slas) == {"interactive", "bulk", "maintenance"}
    assert slas["interactive"].endswith("> 60")


def test_promtool_accepts_the_alert_rules_and_the_config(host):
    rules = host.run("promtool check rules /etc/prometheus/shoestring.rules.yml")
    assert rules.rc == 0, rules.stderr
    assert "SUCCESS" in rules.stdout
    config = host.run("promtool check config /etc/prometheus/prometheus.yml")
    assert config.rc == 0, config.stdout + config.stderr


def _written(host):
    """Bytes on disk under Prometheus' data directory: the metrics stack's only disk writes
    (the exporters write nothing; the guard writes to tmpfs). /proc/<pid>/io would be exact but
    a container's root lacks CAP_SYS_PTRACE to read it for another user's process."""
    return int(host.check_output("du -sb /var/lib/prometheus").split()[0])


def test_measure_what_the_metrics_stack_and_the_guard_cost(host):
    """Not a timed test: it prints the figures (memory now, disk growth over one minute)."""
    before = _written(host)
    time.sleep(60)
    grown = _written(host) - before
    print("\nmemory now:")
    total = 0
    for unit in [*exporters(host), "shoestring-guard.service"]:
        memory = int(host.check_output("systemctl show -P MemoryCurrent %s", unit))
        total += memory
        print(f"  {unit}: {memory / 1048576:.1f} MiB")
    print(f"  total: {total / 1048576:.1f} MiB")
    rss = host.check_output(
        "ps -o rss=,comm= -p $(systemctl show -P MainPID shoestring-metrics.service)"
        "$(systemctl -q is-active prometheus-redis-exporter.service &&"
        " echo ,$(systemctl show -P MainPID prometheus-redis-exporter.service))"
    )
    print("RSS (KiB) of the app's and the Redis exporter:\n" + rss)
    tmpfs = host.check_output("du -sk /run/shoestring-metrics").split()[0]
    print(f"the pools' metrics files on tmpfs (no disk writes): {tmpfs} KiB")
    print(f"Prometheus' data directory grew {grown / 1024:.0f} KiB in one minute")
    assert total > 0
