from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.utils import timezone

from . import crypto


@models.CharField.register_lookup
class AnyOf(models.Lookup):
    """`field__any=[...]`: `field = ANY(%s)` with the list as one array parameter. `__in`
    prepares each of a batch's up to 200 values in Python, which was a quarter of a batch
    task's CPU (py-spy on make bench-batch: batch_process_rhs)."""

    lookup_name = "any"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        return f"{lhs} = ANY(%s)", [*lhs_params, list(self.rhs)]


def one_or_none(queryset):
    """The row a lookup by a unique key finds, or None: first() without the ORDER BY it
    adds (there is at most one row), whose building was a quarter of a batch task's CPU
    (py-spy on make bench-batch: Expression.identity binding a signature per query)."""
    return next(iter(queryset[:1]), None)


class LinkedAccount(models.Model):
    """A person's Bluesky account, linked by signing in with Bluesky (an OAuth grant) or by
    an app password (and its session tokens). Every secret is encrypted at rest."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="linked_account"
    )
    handle = models.CharField(max_length=253)
    did = models.CharField(max_length=255)
    service_url = models.URLField()
    # Empty for an OAuth link: no password is stored then.
    app_password_encrypted = models.TextField(blank=True)
    access_jwt_encrypted = models.TextField(blank=True)
    refresh_jwt_encrypted = models.TextField(blank=True)
    # Signed in with Bluesky: the grant (bluesky.oauth.Grant: DPoP-bound tokens, the DPoP
    # key, the authorization server) as encrypted JSON; empty for an app-password link.
    oauth_grant_encrypted = models.TextField(blank=True, default="", db_default="")
    api_enabled = models.BooleanField(
        default=True, help_text="Off: no task calls the network for this person."
    )
    disabled_reason = models.CharField(max_length=300, blank=True)
    rate_limited_until = models.DateTimeField(null=True, blank=True)
    # The write budget the network last reported for this account (ratelimit-remaining and
    # -reset of a write whose tightest limit was the account's own): what pacing spends.
    write_points_left = models.PositiveIntegerField(null=True, blank=True)
    write_window_reset_at = models.DateTimeField(null=True, blank=True)
    # The person asked to lift every block and mute held for them (release_expired takes
    # them all, a bounded number a pass), and perhaps to unlink once they are lifted.
    lift_all_requested_at = models.DateTimeField(null=True, blank=True)
    unlink_requested_at = models.DateTimeField(null=True, blank=True)
    linked_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"@{self.handle}"

    @property
    def app_password(self):
        return crypto.decrypt(self.app_password_encrypted)

    @app_password.setter
    def app_password(self, value):
        self.app_password_encrypted = crypto.encrypt(value)

    @property
    def uses_oauth(self):
        return bool(self.oauth_grant_encrypted)

    def is_rate_limited(self):
        return bool(self.rate_limited_until and self.rate_limited_until > timezone.now())

    def budget_wait_until(self, now=None):
        """When this account may write again, if it may not now: the network refused it
        (rate_limited_until), or the points it last reported will not pay for the smallest
        part pacing sends of a batch."""
        now = now or timezone.now()
        if self.rate_limited_until and self.rate_limited_until > now:
            return self.rate_limited_until
        batch_points = Batch.smallest_part() * settings.BLUESKY_POINTS_PER_BLOCK
        if (
            self.write_window_reset_at
            and self.write_window_reset_at > now
            and (self.write_points_left or 0) < batch_points
        ):
            return self.write_window_reset_at
        return None


class TokenBucket(models.Model):
    """Per-person work budget: exactly four fields of state (see blocking.buckets)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="token_bucket"
    )
    tokens = models.FloatField()
    capacity = models.PositiveIntegerField()
    refill_per_hour = models.FloatField()
    refilled_at = models.DateTimeField()

    def __str__(self):
        return f"{self.user}: {int(self.tokens)}/{self.capacity}"


class Action(models.TextChoices):
    BLOCK = "block", "Block"
    MUTE = "mute", "Mute"


class Scope(models.TextChoices):
    ACCOUNT = "account", "The account"
    FOLLOWERS = "followers", "Its followers"
    BOTH = "both", "The account and its followers"
    # A post's campaign: who engaged with it (Campaign.post_groups), and perhaps its author.
    POST = "post", "Who engaged with the post"
    POST_AUTHOR = "postauthor", "The post's author and who engaged with it"

    @classmethod
    def takes_target(cls, scope):
        """The target account itself (the post's author for a post) is blocked too."""
        return scope in (cls.ACCOUNT, cls.BOTH, cls.POST_AUTHOR)


class PostGroup(models.TextChoices):
    """Who engaged with a post, in the order a campaign reads them."""

    LIKES = "likes", "Liked it"
    REPOSTS = "reposts", "Reposted it"
    QUOTES = "quotes", "Quoted it"
    REPLIES = "replies", "Replied in its thread"


class Campaign(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    # Index kept: "my campaigns" lists by user.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    # The account, or the post's author for a post's campaign.
    target_handle = models.CharField(max_length=253)
    target_did = models.CharField(max_length=255)
    # A post's campaign: the post (at:// URI) and which of its engagers to take, in
    # PostGroup order; `cursor` is then "<group>:<that list's cursor>".
    post_uri = models.CharField(max_length=512, blank=True)
    post_groups = ArrayField(models.CharField(max_length=10), default=list, blank=True)
    # Accounts each list gave (a person who liked and replied counts in both).
    found_by = models.JSONField(default=dict, blank=True)
    # Why accounts were skipped: SkipReason -> count (they add up to `skipped`).
    skipped_by = models.JSONField(default=dict, blank=True)
    # A post's campaign reading more than one list: the DIDs it skipped, so someone who
    # liked and replied is found and skipped once (those it takes in are in its batches).
    skipped_dids = ArrayField(models.CharField(max_length=255), default=list, blank=True)
    action = models.CharField(max_length=5, choices=Action.choices)
    # A block campaign that mutes each account it blocks too: the mute rides with the
    # block (no token of its own, no write points: muteActor is not a record), in a batch
    # of its own, and is lifted with it. `muted` counts them; `acted` counts the blocks.
    also_mute = models.BooleanField(default=False)
    muted = models.PositiveIntegerField(default=0)
    scope = models.CharField(max_length=10, choices=Scope.choices)
    duration_weeks = models.PositiveSmallIntegerField(null=True, blank=True)
    until = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    expected = models.PositiveIntegerField(default=0)
    tokens_debited = models.PositiveIntegerField(default=0)
    # Given back when the campaign failed or was cancelled before spending them all.
    tokens_refunded = models.PositiveIntegerField(default=0)
    found = models.PositiveIntegerField(default=0)
    acted = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    cursor = models.CharField(max_length=512, blank=True)
    pages_done = models.BooleanField(default=False)
    # When beat releases the next follower page. Set when the campaign is created, so a
    # lost start_campaign message is recovered from data.
    next_page_at = models.DateTimeField(null=True, blank=True)
    # Network errors fetching follower pages in a row; waits never count.
    page_failures = models.PositiveSmallIntegerField(default=0)
    error = models.CharField(max_length=300, blank=True)
    # Watching: after the first pass, the lists are polled newest first for newcomers
    # (the campaign's position is then WATCHING) and read whole again now and then
    # (`rescanning`), until watch_until; `watched` counts the newcomers taken in.
    watch = models.BooleanField(default=False)
    watch_until = models.DateTimeField(null=True, blank=True)
    watching_since = models.DateTimeField(null=True, blank=True)
    rescan_at = models.DateTimeField(null=True, blank=True)
    rescanning = models.BooleanField(default=False)
    watched = models.PositiveIntegerField(default=0)
    # The person asked to lift this campaign's blocks and mutes now, before their time is
    # up (release_expired takes them, a bounded number a pass, and clears it when done).
    lift_requested_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            # release_expired: the few campaigns whose blocks are being lifted early.
            models.Index(
                fields=["lift_requested_at"],
                condition=Q(lift_requested_at__isnull=False),
                name="campaign_lifting",
            ),
            # release_due_pages: running campaigns whose next follower page is due.
            models.Index(
                fields=["next_page_at"],
                condition=Q(status="running", pages_done=False),
                name="campaign_page_due",
            ),
        ]

    def __str__(self):
        action = self.action_label().lower()
        if self.post_uri:
            return f"{action} engagers of a post by @{self.target_handle}"
        return f"{action} @{self.target_handle} ({self.get_scope_display()})"

    def action_label(self):
        return "Block and mute" if self.also_mute else self.get_action_display()

    @property
    def processed(self):
        return self.acted + self.skipped + self.failed

    @property
    def percent(self):
        if self.status == self.Status.DONE:
            return 100
        if not self.expected:
            return 0
        return min(100, int(100 * self.processed / self.expected))


class SkipReason(models.TextChoices):
    FOLLOWING = "following", "you follow them"
    TRUSTED = "trusted", "on your never-block list"
    ALREADY = "already", "already blocked or muted"
    YOURSELF = "yourself", "your own account"


class Trusted(models.Model):
    """An account a person never wants blocked or muted by a campaign, whatever list it is
    found on: checked when a page is taken in and again just before each batch is sent."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_index=False)
    did = models.CharField(max_length=255)
    handle = models.CharField(max_length=253)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Its index serves the page's list and every "which of these are trusted".
            models.UniqueConstraint(fields=["owner", "did"], name="one_trusted_per_account"),
        ]

    def __str__(self):
        return f"@{self.handle}"


def campaign_link():
    """The campaign a row came from: only shown or filtered on, never joined on or cascaded
    (campaigns go only with their user, whose rows go too), so no index and no constraint
    to check on every insert."""
    return models.ForeignKey(
        Campaign,
        on_delete=models.DO_NOTHING,
        null=True,
        blank=True,
        db_index=False,
        db_constraint=False,
    )


class ActionRecord(models.Model):
    """One block or mute the service holds for a person. Millions of rows: real columns only.

    A row is written once, when the network confirmed the block (with its record key), and
    deleted when the block is lifted: the work before and after lives in Batch rows, one
    per up to 50 accounts, so a block costs one row write while it is made. The unique
    constraint always means "we hold this block now"; a later campaign may block again.
    """

    # No index of its own: the unique constraint's index starts with owner.
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_index=False)
    campaign = campaign_link()
    kind = models.CharField(max_length=5, choices=Action.choices)
    subject_did = models.CharField(max_length=255)
    # C collation: handles are ASCII, and byte order lets the list's index answer
    # "handles starting with ..." (LIKE 'abc%') as a range.
    subject_handle = models.CharField(max_length=253, blank=True, db_collation="C")
    rkey = models.CharField(max_length=64, blank=True)
    until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Idempotency: a person holds at most one block (or mute) of an account.
            # Its index also serves "everything I blocked" and the batch look-ups.
            models.UniqueConstraint(
                fields=["owner", "subject_did", "kind"], name="one_action_per_subject"
            ),
        ]
        indexes = [
            # release_expired: the next actions whose time is up, oldest first.
            models.Index(fields=["until"], condition=Q(until__isnull=False), name="action_due"),
            # The blocks list: a person's rows in handle order, paged by (handle, id)
            # and searched by handle prefix, without reading the rest.
            models.Index(fields=["owner", "subject_handle", "id"], name="action_by_handle"),
        ]

    def __str__(self):
        return f"{self.kind} {self.subject_handle or self.subject_did}"


class Batch(models.Model):
    """Network work still to do for one person: up to BLOCK_BATCH_SIZE accounts to block,
    mute, unblock or unmute. Durable: a lost task message, a killed worker or a database
    restart loses nothing, because beat releases ready rows (blocking.pacing) and puts
    queued rows whose task vanished back to ready (blocking.upkeep).

    Each block's record key is made when the row is (`rkeys`), before any attempt, so
    every retry writes the same records and the PDS refuses a duplicate.
    """

    class Op(models.TextChoices):
        BLOCK = "block", "Block"
        MUTE = "mute", "Mute"
        UNBLOCK = "unblock", "Unblock"
        UNMUTE = "unmute", "Unmute"

    class State(models.TextChoices):
        READY = "ready", "Waiting for its turn"
        QUEUED = "queued", "Queued"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_index=False)
    campaign = campaign_link()
    op = models.CharField(max_length=7, choices=Op.choices)
    dids = ArrayField(models.CharField(max_length=255))
    handles = ArrayField(models.CharField(max_length=253))
    rkeys = ArrayField(models.CharField(max_length=64))
    # A person is waiting on it (a single block, an undo from the list): goes first.
    interactive = models.BooleanField(default=False)
    state = models.CharField(max_length=6, choices=State.choices, default=State.READY)
    not_before = models.DateTimeField()
    queued_at = models.DateTimeField(null=True, blank=True)
    # Network errors so far; waits (budget, kill switch, database) never count.
    failures = models.PositiveSmallIntegerField(default=0)
    # Times the stranded-work sweep put it back to ready after its task vanished.
    requeued = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "batches"
        indexes = [
            # pacing.dispatch: a person's ready and queued work, oldest first.
            models.Index(fields=["owner", "state", "id"], name="batch_by_owner"),
            # release_batches / requeue_stranded: what is due, over all people.
            models.Index(fields=["state", "not_before"], name="batch_due"),
        ]

    def __str__(self):
        return f"{self.op} {len(self.dids)} ({self.state})"

    @staticmethod
    def smallest_part():
        """The fewest accounts pacing cuts a batch down to when a person's budget will not
        pay for all of it: a quarter of a batch, so a call still carries many writes."""
        return max(1, settings.BLOCK_BATCH_SIZE // 4)

    def points(self):
        """Write points the network charges for this batch (creates 3, deletes 1)."""
        if self.op == self.Op.BLOCK:
            return settings.BLUESKY_POINTS_PER_BLOCK * len(self.dids)
        if self.op == self.Op.UNBLOCK:
            return settings.BLUESKY_POINTS_PER_UNBLOCK * len(self.dids)
        return 0


class AddressBudget(models.Model):
    """The requests every account may still send from one egress address: a token bucket
    shared by all the processes whose requests leave from it (blocking.pacing), named by
    their SHOESTRING_EGRESS_ADDRESS. Made from the settings on first use; an operator may
    change capacity and refill here (admin) at run time."""

    # Long enough for a host name, which a deployment may use as the address's name.
    name = models.CharField(max_length=255, primary_key=True)
    tokens = models.FloatField()
    capacity = models.FloatField()
    refill_per_s = models.FloatField()
    refilled_at = models.DateTimeField()

    def __str__(self):
        return f"{self.name}: {int(self.tokens)}"


class KillSwitch(models.Model):
    """Engaged: tasks of this name fail fast and retry later, without touching the network."""

    task_name = models.CharField(max_length=100, unique=True)
    engaged = models.BooleanField(default=True)
    reason = models.CharField(max_length=300, blank=True)
    changed_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "kill switches"

    def __str__(self):
        return f"{self.task_name} ({'engaged' if self.engaged else 'off'})"

    @classmethod
    def is_engaged(cls, task_name):
        return cls.objects.filter(task_name=task_name, engaged=True).exists()


class TaskLock(models.Model):
    """Keeps a periodic task from overlapping its previous run; expires on its own."""

    name = models.CharField(max_length=100, primary_key=True)
    expires_at = models.DateTimeField()

    def __str__(self):
        return f"{self.name} until {self.expires_at:%H:%M:%S}"
