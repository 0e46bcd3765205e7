"""The block service's tasks, one module per stage; Celery's autodiscovery imports this one.

- campaigns.py: start_campaign, fetch_follower_page (a campaign's life, its end and refund)
- batches.py: act_on_batch, undo_batch (the network writes), revoke_unlinked_grant
- pacing.py: what may be sent now (the account's write budget, the shared address budget)
- upkeep.py: what beat runs (release_due_pages, release_batches, release_expired,
  requeue_stranded)
- taskbase.py: kill switch, waits versus failures, time limits

Every task takes primary keys and JSON, has a name, a time limit and a route in
settings.CELERY_TASK_ROUTES (docs/queues.md). Waiting work is rows with a due time that
beat releases; no countdown exceeds settings.MAX_COUNTDOWN_S.
"""

from .batches import act_on_batch, revoke_unlinked_grant, undo_batch
from .campaigns import fetch_follower_page, start_campaign
from .upkeep import release_batches, release_due_pages, release_expired, requeue_stranded

__all__ = [
    "act_on_batch",
    "fetch_follower_page",
    "release_batches",
    "release_due_pages",
    "release_expired",
    "requeue_stranded",
    "revoke_unlinked_grant",
    "start_campaign",
    "undo_batch",
]
