"""Each pool's database rights (roles/workers/vars/main.yml, as the playbook grants them)
are enough for its tasks: the tasks run here under a role with exactly those rights."""

from pathlib import Path
from unittest import mock

import pytest
import yaml
from bluesky.tids import next_tids
from django.db import connection
from django.utils import timezone

from blocking import batches, campaigns, crypto, network, upkeep
from blocking.models import ActionRecord, Batch, Campaign, LinkedAccount
from blocking.tests.test_retries import campaign_with_batch

pytestmark = pytest.mark.django_db

VARS = Path(__file__).resolve().parents[3] / "roles/workers/vars/main.yml"


def as_pool(kind):
    """SET ROLE to a fresh role holding the grants of the network or maintenance pools."""
    spec = yaml.safe_load(VARS.read_text())
    role = f"test_pool_{kind}"
    with connection.cursor() as cursor:
        cursor.execute(f"DROP ROLE IF EXISTS {role}")
        cursor.execute(f"CREATE ROLE {role} NOLOGIN")
        cursor.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        for grant in spec[f"_workers_{kind}_grants"]:
            columns = grant.get("columns", "").replace(" ", "")
            target = f"({columns})" if columns else ""
            cursor.execute(f"GRANT {grant['privs']} {target} ON {grant['table']} TO {role}")
        for sequence in spec[f"_workers_{kind}_sequences"]:
            cursor.execute(f"GRANT USAGE ON SEQUENCE {sequence} TO {role}")
        cursor.execute(f"SET ROLE {role}")


@pytest.fixture
def reset_role():
    yield
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")


def test_beats_pool_can_run_every_periodic_task(person, reset_role):
    user = person()
    campaign, batch = campaign_with_batch(user)
    Campaign.objects.filter(pk=campaign.pk).update(
        pages_done=False, cursor="c", next_page_at=timezone.now()
    )
    Batch.objects.filter(pk=batch.pk).update(state="ready")
    ActionRecord.objects.create(
        owner=user, kind="block", subject_did="did:plc:x", rkey="r", until=timezone.now()
    )
    LinkedAccount.objects.filter(user=user).update(lift_all_requested_at=timezone.now())
    as_pool("maintenance")
    with mock.patch.object(campaigns.fetch_follower_page, "delay"):
        for periodic in (
            upkeep.release_due_pages,
            upkeep.release_batches,
            upkeep.release_expired,
            upkeep.requeue_stranded,
        ):
            result = periodic.apply()
            assert result.state == "SUCCESS", (periodic.name, result.result)
            assert result.result is not None, periodic.name  # not a swallowed database error
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")
    assert not ActionRecord.objects.exists()
    assert Batch.objects.filter(op="unblock").exists()


def test_the_network_pools_can_block_and_end_a_campaign(person, fakesky, reset_role):
    user = person()
    dids = [fakesky.did(f"f{i}.crowd-3.fake.test") for i in range(3)]
    campaign, batch = campaign_with_batch(user, dids=dids)
    Batch.objects.filter(pk=batch.pk).update(rkeys=next_tids(3))
    as_pool("network")
    assert batches.act_on_batch.apply(args=[batch.pk]).state == "SUCCESS"
    campaigns.end(Campaign.objects.filter(pk=campaign.pk), Campaign.Status.CANCELLED)
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")
    assert ActionRecord.objects.filter(owner=user).count() == 3
    assert fakesky.state(user.handle)["block_count"] == 3


def test_beats_pool_unlinks_a_bluesky_sign_in_and_hands_its_grant_on(
    person, reset_role, django_capture_on_commit_callbacks
):
    """Lifted, then unlinked: the maintenance pool reads the grant only as ciphertext (it
    has no key) and queues its revocation for a network pool."""
    user = person()
    LinkedAccount.objects.filter(user=user).update(
        oauth_grant_encrypted=crypto.encrypt('{"did": "did:plc:x"}'),
        lift_all_requested_at=timezone.now(),
        unlink_requested_at=timezone.now(),
    )
    as_pool("maintenance")
    with (
        mock.patch.object(batches.revoke_unlinked_grant, "delay") as revoke,
        django_capture_on_commit_callbacks(execute=True),
    ):
        result = upkeep.release_expired.apply()
    assert result.state == "SUCCESS", result.result
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")
    assert not LinkedAccount.objects.filter(user=user).exists()
    (encrypted,) = revoke.call_args.args
    assert crypto.decrypt(encrypted) == '{"did": "did:plc:x"}'


def test_the_network_pools_refresh_and_revoke_a_bluesky_grant(bluesky, client, reset_role):
    bluesky.account("alice.fake.test")
    bluesky.sign_in(client, "alice.fake.test")
    account = LinkedAccount.objects.get()
    old = network.grant_of(account)
    as_pool("network")
    fresh = network.renewer(account.pk)(old)
    encrypted = LinkedAccount.objects.values_list("oauth_grant_encrypted", flat=True).get()
    assert batches.revoke_unlinked_grant.apply(args=[encrypted]).state == "SUCCESS"
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")
    assert network.grant_of(LinkedAccount.objects.get()).refresh_token == fresh.refresh_token
    assert bluesky.fake.oauth_state()["grants_revoked"] == 1
