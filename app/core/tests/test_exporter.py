"""The app's metrics exporter: task counters written by worker processes in prometheus_client's
multiprocess mode and added up over pools; queue depth from a real Redis and a local SQS;
campaigns, rate limits, the shared address budget and kill switches from the real database; the
certificate's expiry read over TLS; all scraped over HTTP and parsed by prometheus_client's own
parser, as Prometheus would."""

import datetime
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from prometheus_client.parser import text_string_to_metric_families

from config.celery_app import app as celery_app
from core.exporter import registry_for

APP_DIR = Path(__file__).resolve().parents[2]

# A worker process: Celery's own signals, sent as a prefork child sends them around a task.
WORKER = """
import sys
from celery import Celery
from celery.exceptions import Retry
from celery.signals import task_failure, task_postrun, task_prerun, task_retry
from core.task_metrics import count_actions

app = Celery("probe")

@app.task(name="probe.ok")
def ok():
    pass

@app.task(name="probe.flaky")
def flaky():
    pass

for n in range(int(sys.argv[1])):
    task_prerun.send(sender=ok, task_id=f"ok-{n}", task=ok)
    task_postrun.send(sender=ok, task_id=f"ok-{n}", task=ok, state="SUCCESS")
task_prerun.send(sender=flaky, task_id="f", task=flaky)
task_retry.send(sender=flaky, request=None, reason="429", einfo=None)
task_postrun.send(sender=flaky, task_id="f", task=flaky, state="RETRY")
task_prerun.send(sender=flaky, task_id="g", task=flaky)
task_failure.send(sender=flaky, task_id="g", exception=ValueError("x"))
task_postrun.send(sender=flaky, task_id="g", task=flaky, state="FAILURE")
count_actions("block", 50)
count_actions("unblock", 7)
"""


def run_worker(pool_dir, runs):
    pool_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(pool_dir), "PYTHONPATH": str(APP_DIR)}
    subprocess.run([sys.executable, "-c", WORKER, str(runs)], env=env, check=True, cwd=APP_DIR)


@pytest.fixture
def served(tmp_path):
    """Serve a registry on a free loopback port; returns a function that scrapes it."""
    servers = []

    def scrape(**options):
        from prometheus_client import start_http_server

        options.setdefault("pause_flag", str(tmp_path / "pause-bulk"))
        registry = registry_for(str(tmp_path / "metrics"), **options)
        server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
        servers.append(server)
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    yield scrape
    for server in servers:
        server.shutdown()


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.mark.django_db(transaction=True)
def test_task_counters_of_every_process_and_pool_are_added_up(served, tmp_path, redis_broker):
    run_worker(tmp_path / "metrics" / "interactive", 3)
    run_worker(tmp_path / "metrics" / "bulk", 2)
    run_worker(tmp_path / "metrics" / "bulk", 1)  # a second prefork child of the same pool
    samples = served()
    assert value(samples, "shoestring_task_runs_total", task="probe.ok", state="SUCCESS") == 6
    assert value(samples, "shoestring_task_runs_total", task="probe.flaky", state="RETRY") == 3
    assert value(samples, "shoestring_task_runs_total", task="probe.flaky", state="FAILURE") == 3
    assert value(samples, "shoestring_task_retries_total", task="probe.flaky") == 3
    assert value(samples, "shoestring_task_failures_total", task="probe.flaky") == 3
    assert value(samples, "shoestring_task_duration_seconds_count", task="probe.ok") == 6
    assert 0 <= value(samples, "shoestring_task_duration_seconds_sum", task="probe.ok") < 5
    assert value(samples, "shoestring_network_actions_total", action="block") == 150
    assert value(samples, "shoestring_network_actions_total", action="unblock") == 21


@pytest.mark.django_db(transaction=True)
def test_no_worker_has_run_yet_and_the_exporter_still_answers(served, redis_broker):
    samples = served()
    assert not any(name.startswith("shoestring_task_") for name, _ in samples)
    assert value(samples, "shoestring_exporter_source_up", source="queues") == 1


@pytest.mark.django_db(transaction=True)
def test_redis_queue_depth_and_oldest_age(served, redis_broker):
    with celery_app.connection_for_write(redis_broker) as connection:
        celery_app.send_task("probe.first", queue="bulk", connection=connection)
        time.sleep(1.1)
        celery_app.send_task("probe.second", queue="bulk", connection=connection)
    samples = served()
    assert value(samples, "shoestring_queue_messages", queue="bulk", state="waiting") == 2
    assert value(samples, "shoestring_queue_messages", queue="interactive", state="waiting") == 0
    assert 1.1 <= value(samples, "shoestring_queue_oldest_message_age_seconds", queue="bulk") < 60
    # An empty queue has nothing old waiting: 0, so an SLA alert can resolve.
    assert value(samples, "shoestring_queue_oldest_message_age_seconds", queue="interactive") == 0
    assert value(samples, "shoestring_queue_reserved_messages") == 0


@pytest.mark.django_db(transaction=True)
def test_sqs_visible_in_flight_delayed_and_dead(served, sqs_filled):
    samples = served()
    states = {
        state: value(samples, "shoestring_queue_messages", queue="bulk", state=state)
        for state in ("waiting", "in_flight", "delayed", "dead")
    }
    assert states == {"waiting": 2, "in_flight": 1, "delayed": 1, "dead": 0}
    assert value(samples, "shoestring_queue_messages", queue="interactive", state="dead") == 1
    # moto keeps no CloudWatch data for SQS: the age is absent, never made up.
    assert value(samples, "shoestring_queue_oldest_message_age_seconds", queue="bulk") is None


@pytest.mark.django_db(transaction=True)
def test_campaigns_rate_limits_address_budget_kill_switches_and_pause_flag(
    served, redis_broker, held_back, tmp_path
):
    from blocking.models import AddressBudget
    from django.utils import timezone

    from core.models import BulkPause

    # 100 tokens 10 s ago at 2 a second: 120 now, the same refill the pacing applies.
    AddressBudget.objects.create(
        name="global-ip",
        tokens=100,
        capacity=2700,
        refill_per_s=2,
        refilled_at=timezone.now() - datetime.timedelta(seconds=10),
    )
    # Another worker host's egress address: its own bucket, shown by the same exporter.
    AddressBudget.objects.create(
        name="worker-2", tokens=50, capacity=97, refill_per_s=0, refilled_at=timezone.now()
    )
    (tmp_path / "pause-bulk").touch()
    # A pause shared through the database (another host's guard), and one it lifted.
    BulkPause.objects.create(source="db-1", paused=True, reason="burst balance 12%")
    BulkPause.objects.create(source="db-0", paused=False)

    samples = served()
    assert value(samples, "shoestring_campaigns_running") == 1
    assert value(samples, "shoestring_people_rate_limited") == 1
    assert value(samples, "shoestring_kill_switch_engaged", task="blocking.act_on_batch") == 1
    released = value(samples, "shoestring_kill_switch_engaged", task="blocking.fetch_follower_page")
    assert released == 0
    assert value(samples, "shoestring_kill_switches_engaged") == 1
    assert 120 <= value(samples, "shoestring_address_budget_tokens", budget="global-ip") < 130
    assert value(samples, "shoestring_address_budget_capacity", budget="global-ip") == 2700
    assert value(samples, "shoestring_address_budget_tokens", budget="worker-2") == 50
    assert value(samples, "shoestring_address_budget_capacity", budget="worker-2") == 97
    assert value(samples, "shoestring_bulk_pause_flag") == 1
    assert value(samples, "shoestring_bulk_paused_by", source="db-1") == 1
    assert value(samples, "shoestring_bulk_paused_by", source="db-0") == 0
    assert value(samples, "shoestring_exporter_source_up", source="database") == 1


@pytest.mark.django_db(transaction=True)
def test_a_broken_source_is_reported_and_the_others_still_answer(served, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_loopback_port()}/0"
    samples = served()
    assert value(samples, "shoestring_exporter_source_up", source="queues") == 0
    assert value(samples, "shoestring_exporter_source_up", source="database") == 1
    assert value(samples, "shoestring_campaigns_running") == 0


def free_loopback_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def tls_server(tmp_path):
    """A TLS server on loopback with a certificate that expires in 10 days."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "probe.test")])
    now = datetime.datetime.now(datetime.UTC)
    expires = (now + datetime.timedelta(days=10)).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(expires)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}", expires.timestamp()
    stop.set()
    thread.join()
    listener.close()


@pytest.mark.django_db(transaction=True)
def test_the_certificate_served_on_loopback_and_its_expiry(served, tls_server, redis_broker):
    address, expires = tls_server
    samples = served(tls_address=address, tls_server_name="probe.test")
    assert value(samples, "shoestring_certificate_expiry_timestamp_seconds") == expires
    assert value(samples, "shoestring_exporter_source_up", source="certificate") == 1


def test_the_exporter_refuses_to_listen_beyond_loopback():
    with pytest.raises(CommandError, match="loopback"):
        call_command("serve_metrics", "--address", "0.0.0.0")  # noqa: S104 - the refusal tested
