"""One sample a second of everything the report needs, as cumulative counters (the
controller takes differences): the counted devices, Postgres, every service's memory and
CPU, swap and OOM kills, the broker, the fake's totals and the load's own counters."""

import resource
import time

from . import host
from .broker import Broker, Redis, broker_url
from .fake import Fake


class Sampler:
    def __init__(self, devices, emit, load_counters=None, broker=True):
        self.devices, self.emit = devices, emit
        self.load_counters = load_counters or (lambda: {})
        self.cgroups = host.Cgroups()
        self.psql = host.Psql()
        # A host with no Celery client (the cluster's database host) has no broker to sample.
        self.broker = Broker(Redis(broker_url())) if broker else None
        self.fake = Fake(timeout=5)
        self.fake_totals = True  # until the fake says it keeps none

    def _fake(self):
        if not self.fake_totals:
            return None
        try:
            totals = self.fake.totals()
        except OSError:
            return None
        if totals is None:
            self.fake_totals = False
        return totals

    def sample(self, phase):
        started = time.monotonic()
        now = time.time()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        record = {
            "type": "sample",
            "t": round(now, 3),
            "phase": phase,
            "disk": host.diskstats(self.devices.values()),
            "pg": host.postgres_stats(self.psql),
            "memory": self.cgroups.sample(),
            "vm": host.vmstat(),
            "broker": self.broker.sample(now) if self.broker else None,
            "fake": self._fake(),
            "load": dict(self.load_counters()),
            "agent_cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        }
        record["sample_ms"] = round((time.monotonic() - started) * 1000, 1)
        return record

    def run(self, phase, seconds, until=None):
        """Sample every second for `seconds`, on a fixed schedule (a slow sample never
        shifts the next), or until `until(sample)` is true."""
        start = time.monotonic()
        for tick in range(int(seconds) + 1):
            record = self.sample(phase)
            self.emit(record)
            if until is not None and until(record):
                return
            wait = start + tick + 1 - time.monotonic()
            if tick < int(seconds) and wait > 0:
                time.sleep(wait)

    def close(self):
        self.psql.close()
        if self.broker:
            self.broker.redis.close()
