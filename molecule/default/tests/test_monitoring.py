"""Metrics every 15 s on loopback (roles/monitoring): the exporters answer only on 127.0.0.1,
the local Prometheus scrapes them all and has the alert rules loaded; and a measurement of the
memory and the disk writes per minute the metrics stack and the guard add (printed figures)."""

import json
import time

import pytest
from shoestring_host import wait_until

EXPORTERS = {
    "prometheus-node-exporter.service": 9100,
    "prometheus-postgres-exporter.service": 9187,
    "prometheus.service": 9090,
}
MEASURED = [*EXPORTERS, "shoestring-guard.service"]


def prometheus(host, path):
    return json.loads(host.check_output("curl -sf http://127.0.0.1:9090%s", path))["data"]


@pytest.mark.parametrize(("unit", "port"), EXPORTERS.items())
def test_each_exporter_runs_and_listens_on_loopback_only(host, unit, port):
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

    health = wait_until(lambda: set(all_up().values()) == {"up"} and all_up(), 60)
    assert health == {"prometheus": "up", "node": "up", "postgres": "up"}, all_up()


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
    assert {"BurstBalanceLow", "MemoryPressureHigh", "OOMKill", "DiskSpaceLow"} <= names


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
    for unit in MEASURED:
        memory = int(host.check_output("systemctl show -P MemoryCurrent %s", unit))
        total += memory
        print(f"  {unit}: {memory / 1048576:.1f} MiB")
    print(f"  total: {total / 1048576:.1f} MiB")
    print(f"Prometheus' data directory grew {grown / 1024:.0f} KiB in one minute")
    assert total > 0
