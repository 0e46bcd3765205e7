"""What a batch's size costs, measured: `make bench-batch` (on demand, not in `make test`).

For each size, one person's 2,000 blocks go through act_on_batch in this process against
the fake over real HTTP: requests to the network per block (the per-address budget is
3,000 requests per 5 minutes for every account together), the task's own CPU per block
(this thread's CPU time; the fake runs in other threads) and its Postgres backend's (from
/proc), and what a failed call costs: the requests a lost answer adds (the call is applied,
its answer never comes; the same keys are written again) and those one invalid record adds
(the PDS refuses the whole call). It prints a table and fails only if a block is missing or
made twice.
"""

import os
import time

import pytest
from django.db import connection

from blocking import batches
from blocking.campaigns import new_batches
from blocking.models import Batch, Campaign
from blocking.network import client_for
from blocking.tests.helpers import address_budget, unlimited

pytestmark = [pytest.mark.figures, pytest.mark.django_db]
SIZES = tuple(int(size) for size in os.environ.get("BENCH_BATCH_SIZES", "50,100,200").split(","))
BLOCKS = 2000
TARGET = "crowd-7000.fake.test"  # enough followers for every size, distinct per size


def backend_cpu_s():
    """CPU seconds of this connection's Postgres backend so far."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def followers(user, count, skip):
    found = []
    with client_for(user.account) as network:
        target = network.resolve(TARGET)
        cursor = None
        while len(found) < skip + count:
            page = network.followers_page(target.did, cursor, limit=100)
            found.extend((p.did, p.handle) for p in page.followers)
            cursor = page.cursor
    return target, found[skip : skip + count]


def campaign_for(user, target, subjects, size, settings):
    settings.BLOCK_BATCH_SIZE = size
    campaign = Campaign.objects.create(
        user=user,
        target_handle=target.handle,
        target_did=target.did,
        action="block",
        scope="followers",
        expected=len(subjects),
        tokens_debited=len(subjects),
        found=len(subjects),
        pages_done=True,
    )
    new_batches(campaign, subjects)
    Batch.objects.filter(campaign=campaign).update(state=Batch.State.QUEUED)
    return campaign


def run_all(campaign):
    for pk in Batch.objects.filter(campaign=campaign).order_by("pk").values_list("pk", flat=True):
        batches.act_on_batch.apply(args=(pk,))


def requests(fakesky):
    return fakesky.state()["totals"]["requests"]


def test_figures_for_each_batch_size(person, fakesky, settings, capsys):
    unlimited(fakesky)
    fakesky.configure(indexing_delay_s=0)
    address_budget(100_000, 300)  # the app's own share of the address is not measured here
    rows, taken = [], 0
    for size in SIZES:
        user = person(f"size{size}")
        target, subjects = followers(user, BLOCKS + 2 * size, taken)
        taken += len(subjects)
        work, lost, refused = subjects[:BLOCKS], subjects[BLOCKS:-size], subjects[-size:]
        campaign = campaign_for(user, target, work, size, settings)
        sent, task_cpu, db_cpu, wall = (
            requests(fakesky),
            time.thread_time(),
            backend_cpu_s(),
            time.monotonic(),
        )
        run_all(campaign)
        wall = time.monotonic() - wall
        task_cpu, db_cpu = time.thread_time() - task_cpu, backend_cpu_s() - db_cpu
        sent = requests(fakesky) - sent

        # A lost answer: the call is applied, the connection closes; then the same keys again.
        lost_campaign = campaign_for(user, target, lost, size, settings)
        fakesky.faults(drop_count=1)
        run_all(lost_campaign)
        Batch.objects.filter(campaign=lost_campaign).update(state=Batch.State.QUEUED)
        before = requests(fakesky)
        run_all(lost_campaign)
        lost_cost = requests(fakesky) - before

        # One invalid record: the PDS refuses the whole call.
        refused_campaign = campaign_for(user, target, refused, size, settings)
        batch = Batch.objects.get(campaign=refused_campaign)
        Batch.objects.filter(pk=batch.pk).update(dids=["not-a-did", *batch.dids[1:]])
        before = requests(fakesky)
        run_all(refused_campaign)
        refused_cost = requests(fakesky) - before

        state = fakesky.state(user.handle)
        assert state["duplicates"] == 0
        assert state["block_count"] == state["distinct_blocked"] == BLOCKS + 2 * size - 1
        for each in (campaign, lost_campaign, refused_campaign):
            each.refresh_from_db()
            assert each.status == "done", each.error
        rows.append(
            f"| {size} | {sent / BLOCKS:.4f} | {1000 * task_cpu / BLOCKS:.3f}"
            f" | {1000 * db_cpu / BLOCKS:.3f} | {BLOCKS / wall:,.0f} | {lost_cost}"
            f" | {refused_cost} |"
        )
    with capsys.disabled():
        print(
            f"\nbatch size figures: {BLOCKS:,} blocks a size, one person, the fake on loopback\n"
            "| batch | requests per block | task CPU ms per block | Postgres CPU ms per block"
            " | blocks/s (one task at a time) | requests to recover a lost answer"
            " | requests to finish a refused call |\n|---|---|---|---|---|---|---|"
        )
        print("\n".join(rows))
