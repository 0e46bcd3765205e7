from datetime import timedelta

from bluesky.errors import CredentialsRevoked, ProviderError
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.db import connection, transaction
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from core.signin import fresh_sign_in

from . import blocklist, buckets, crypto, estimate, tasks, upkeep
from .batches import revoke_later
from .campaigns import end as end_campaigns
from .campaigns import finish_if_complete, take_in
from .forms import CampaignForm, LinkAccountForm, SignupForm, TrustedForm
from .models import (
    ActionRecord,
    Campaign,
    KillSwitch,
    LinkedAccount,
    PostGroup,
    Scope,
    SkipReason,
    Trusted,
)
from .network import client_for, new_client


def signup(request):
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        buckets.bucket_for(user)
        return redirect("link")
    return render(request, "blocking/signup.html", {"form": form})


@login_required
def link(request):
    account = LinkedAccount.objects.filter(user=request.user).first()
    form = LinkAccountForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        handle, password = form.cleaned_data["handle"], form.cleaned_data["app_password"]
        try:
            with new_client(handle, password) as client:
                session = client.login()
        except CredentialsRevoked as error:
            form.add_error(None, error.link_message)
        except ProviderError:
            form.add_error(
                None,
                "Bluesky did not answer, so nothing was saved. Wait a minute and press Link again.",
            )
        else:
            if LinkedAccount.objects.filter(did=session.did).exclude(user=request.user).exists():
                form.add_error(
                    None,
                    f"@{session.handle or handle} is linked to another Shoestring account:"
                    " nothing was saved. Sign in to that one to use it.",
                )
            else:
                account = _link_app_password(request, account, session, handle, password)
                messages.success(request, f"Linked @{account.handle}.")
                return redirect("campaign_new")
    held = ActionRecord.objects.filter(owner=request.user).count() if account else 0
    return render(request, "blocking/link.html", {"form": form, "account": account, "held": held})


def _link_app_password(request, account, session, handle, password):
    account = account or LinkedAccount(user=request.user)
    account.handle, account.did = session.handle or handle, session.did
    account.service_url = session.pds_url
    account.app_password = password
    account.access_jwt_encrypted = crypto.encrypt(session.access_jwt)
    account.refresh_jwt_encrypted = crypto.encrypt(session.refresh_jwt)
    account.api_enabled, account.disabled_reason = True, ""
    account.unlink_requested_at = None
    # An app password replaces a sign-in with Bluesky: its grant is ended.
    grant = account.oauth_grant_encrypted
    account.oauth_grant_encrypted = ""
    account.save()
    if grant:
        revoke_later(grant)
    return account


def _unlink_lifts(request):
    account = LinkedAccount.objects.filter(user=request.user).first()
    held = ActionRecord.objects.filter(owner=request.user).count()
    running = Campaign.objects.filter(user=request.user, status=Campaign.Status.RUNNING).count()
    handle = f"@{account.handle}" if account else "your account"
    stop = f"stops your {running:,} running campaigns and " if running else ""
    if held and request.POST.get("lift") == "yes":
        return f"This {stop}lifts all {held:,} blocks and mutes made here, then unlinks {handle}."
    stay = f"; the {held:,} blocks and mutes made here stay in place" if held else ""
    return f"This {stop}unlinks {handle}{stay}."


@login_required
@require_POST
@fresh_sign_in(_unlink_lifts)
def unlink(request):
    """Running campaigns stop (unspent tokens come back). With lift=yes the blocks and
    mutes held here are lifted first and the account is unlinked after; otherwise it is
    unlinked now and the page says how many stay in place."""
    account = LinkedAccount.objects.filter(user=request.user).first()
    if account is None:
        return redirect("link")
    end_campaigns(Campaign.objects.filter(user=request.user), Campaign.Status.CANCELLED)
    held = ActionRecord.objects.filter(owner=request.user).count()
    if held and request.POST.get("lift") == "yes" and account.api_enabled:
        LinkedAccount.objects.filter(pk=account.pk).update(
            lift_all_requested_at=timezone.now(), unlink_requested_at=timezone.now()
        )
        secrets = (
            "access is revoked" if account.uses_oauth else "app password and tokens are deleted"
        )
        messages.success(
            request,
            f"Lifting your {held:,} blocks and mutes a batch at a time; Shoestring's {secrets}"
            " as soon as they are all lifted.",
        )
        return redirect("link")
    with transaction.atomic():
        # The grant as stored now (a worker may have just rotated its tokens), revoked by
        # a network pool once the link is gone.
        grant = (
            LinkedAccount.objects.select_for_update()
            .filter(pk=account.pk)
            .values_list("oauth_grant_encrypted", flat=True)
            .first()
        )
        account.delete()
        if grant:
            revoke_later(grant)
    stay = f" The {held:,} blocks and mutes made here stay in place on Bluesky." if held else ""
    gone = (
        "Shoestring's access is being revoked at your Bluesky server"
        if grant
        else "your app password and session tokens are deleted"
    )
    messages.success(request, f"Unlinked: {gone}.{stay}")
    return redirect("link")


@login_required
def campaign_new(request):
    account = LinkedAccount.objects.filter(user=request.user).first()
    if account is None:
        messages.info(request, "Link your Bluesky account first.")
        return redirect("link")
    if not account.api_enabled:
        messages.error(
            request, account.disabled_reason or "Your access to the network is disabled."
        )
        return redirect("link")
    balance = buckets.balance(request.user)
    with client_for(account) as client:
        form = CampaignForm(request.POST or None, client=client, account=account)
        valid = request.method == "POST" and form.is_valid()
    preview = None
    if valid and "preview" in request.POST:
        preview, valid = _preview(request.user, form, account), False
    if valid:
        campaign = _start(request.user, form)
        if campaign:
            return redirect("campaign", pk=campaign.pk)
        balance = buckets.balance(request.user)
        wait = balance.seconds_until(form.cost)
        if wait is None:
            when = (
                f"that is more than your bucket can hold ({balance.capacity:,}). Ask the"
                " operator for a larger capacity, or choose “The account” to block just them."
            )
        else:
            refilled = timezone.now() + timedelta(seconds=wait)
            when = (
                f"enough will have refilled by {refilled:%Y-%m-%d %H:%M} UTC. Start it then, or"
                " choose “The account” to block just them now."
            )
        form.add_error(
            None,
            f"This needs {form.cost:,} tokens and you have {balance.tokens:,}; {when}",
        )
    return render(
        request,
        "blocking/campaign_new.html",
        {"form": form, "balance": balance, "preview": preview},
    )


def _preview(user, form, account):
    """What a campaign would take before anything is spent: who, how many, the tokens,
    the time at the network's limit."""
    data, cost = form.cleaned_data, form.cost
    parts = []
    if form.post is not None:
        parts = [f"{count:,} {group}" for group, count in form.counts().items()]
        if data["scope"] == Scope.POST_AUTHOR:
            parts.append(f"the author @{form.profile.handle}")
        what = f"a post by @{form.profile.handle}"
    else:
        if data["scope"] != Scope.FOLLOWERS:
            parts.append(f"@{form.profile.handle}")
        if data["scope"] != Scope.ACCOUNT:
            parts.append(f"{form.profile.followers_count:,} followers")
        what = f"@{form.profile.handle}"
    balance = buckets.balance(user)
    return {
        "what": what,
        "accounts": cost,
        "parts": parts,
        "tokens": cost,
        "affordable": balance.tokens >= cost,
        "estimate": estimate.for_new(user.pk, data["action"], cost, account).text,
        "overlap": form.post is not None and len(form.counts()) > 1,
    }


def _start(user, form):
    data = form.cleaned_data
    weeks = None if data["duration"] == "forever" else int(data["duration"])
    with transaction.atomic():
        # The debit is what stops overspending: make its commit durable even
        # though the server's default is synchronous_commit = off.
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit = on")
        if not buckets.debit(user, form.cost):
            return None
        campaign = Campaign.objects.create(
            user=user,
            target_handle=form.profile.handle,
            target_did=form.profile.did,
            post_uri=form.post.uri if form.post else "",
            post_groups=data["post_groups"] if form.post else [],
            action=data["action"],
            also_mute=data["also_mute"],
            scope=data["scope"],
            duration_weeks=weeks,
            until=timezone.now() + timedelta(weeks=weeks) if weeks else None,
            watch=data["watch"] and data["scope"] != Scope.ACCOUNT,
            watch_until=timezone.now()
            + (timedelta(weeks=weeks) if weeks else timedelta(seconds=settings.WATCH_MAX_S)),
            expected=form.cost,
            tokens_debited=form.cost,
            # Due once the lease is over: beat then takes it in (start_campaign) if this
            # request did not, or sends its first page again if that message was lost.
            next_page_at=timezone.now() + timedelta(seconds=settings.ACTION_LEASE_S),
        )
        # Taken in here, so the target's block is one task away from the network; a kill
        # switch on taking campaigns in leaves it to beat.
        if not KillSwitch.is_engaged(tasks.start_campaign.name):
            take_in(campaign)
    finish_if_complete(campaign.pk)
    return campaign


@login_required
def campaign(request, pk):
    campaign = get_object_or_404(Campaign, pk=pk, user=request.user)
    account = LinkedAccount.objects.filter(user=request.user).first()
    groups = [PostGroup(group).label.lower() for group in campaign.post_groups]
    held = 0
    if campaign.status != Campaign.Status.RUNNING:
        held = ActionRecord.objects.filter(owner=request.user, campaign=campaign).count()
    return render(
        request,
        "blocking/campaign.html",
        {
            "campaign": campaign,
            "progress": _progress(campaign, account),
            "groups_text": "Everyone who " + ", ".join(groups) if groups else "",
            "held": held,
        },
    )


def _lift_now_lifts(request, pk):
    campaign = get_object_or_404(Campaign, pk=pk, user=request.user)
    held = ActionRecord.objects.filter(owner=request.user, campaign=campaign).count()
    return (
        f"This lifts the {held:,} blocks and mutes the campaign against"
        f" @{campaign.target_handle} made, now, instead of when their time is up."
    )


@login_required
@require_POST
@fresh_sign_in(_lift_now_lifts)
def campaign_lift(request, pk):
    """Lift a finished (or stopped) campaign's blocks now: release_expired takes them a
    bounded number a pass, as the person's write budget allows."""
    campaign = get_object_or_404(Campaign, pk=pk, user=request.user)
    if campaign.status == Campaign.Status.RUNNING:
        messages.error(request, "Cancel the campaign first: it is still blocking.")
        return redirect("campaign", pk=campaign.pk)
    held = ActionRecord.objects.filter(owner=request.user, campaign=campaign).count()
    Campaign.objects.filter(pk=campaign.pk, lift_requested_at__isnull=True).update(
        lift_requested_at=timezone.now()
    )
    messages.success(
        request,
        f"Lifting the {held:,} blocks and mutes of this campaign, a batch at a time; they"
        " leave your blocks list as Bluesky confirms each one.",
    )
    return redirect("campaign", pk=campaign.pk)


def _cancel_lifts(request, pk):
    campaign = get_object_or_404(Campaign, pk=pk, user=request.user)
    return (
        f"This cancels the campaign against @{campaign.target_handle}: nobody else is blocked"
        f" by it; the {campaign.acted:,} accounts blocked so far stay blocked until their time"
        " is up."
    )


@login_required
@require_POST
@fresh_sign_in(_cancel_lifts)
def campaign_cancel(request, pk):
    campaign = get_object_or_404(Campaign, pk=pk, user=request.user)
    if end_campaigns(Campaign.objects.filter(pk=campaign.pk), Campaign.Status.CANCELLED):
        campaign.refresh_from_db()
        messages.success(
            request,
            f"Cancelled. {campaign.acted:,} accounts blocked so far stay blocked until their"
            f" time is up; {campaign.tokens_refunded:,} unspent tokens are back in your bucket.",
        )
    return redirect("campaign", pk=campaign.pk)


@login_required
@require_GET
def campaign_progress(request, pk):
    campaign = get_object_or_404(Campaign, pk=pk, user=request.user)
    account = LinkedAccount.objects.filter(user=request.user).first()
    return JsonResponse(_progress(campaign, account))


def _progress(campaign, account):
    """What the campaign page shows, as text a person reads; the page's script polls it."""
    now = timezone.now()
    waiting = account.budget_wait_until(now) if account else None
    next_page = (
        campaign.next_page_at
        if campaign.status == Campaign.Status.RUNNING
        and campaign.next_page_at
        and not campaign.pages_done
        else None
    )
    left = estimate.for_campaign(campaign, account, now=now)
    if campaign.watching_since:
        left = None  # what is left is what will arrive
    return {
        "status": campaign.status,
        "status_label": campaign.get_status_display(),
        "percent": campaign.percent,
        "expected": campaign.expected,
        "found": campaign.found,
        "found_by": _found_by(campaign),
        "acted": campaign.acted,
        "muted": campaign.muted,
        # Done blocking, still muting: the page keeps polling.
        "muting": campaign.also_mute
        and campaign.status == Campaign.Status.DONE
        and campaign.muted < campaign.acted,
        "skipped": campaign.skipped,
        "skipped_text": _skipped_text(campaign),
        "failed": campaign.failed,
        "summary": _summary(campaign),
        "estimate": left.text if left else "",
        "waiting_until": waiting.isoformat() if waiting else None,
        "waiting_text": _at(waiting, now) if waiting else "",
        "next_page_at": next_page.isoformat() if next_page else None,
        "next_page_text": _at(next_page, now) if next_page else "",
        "error": campaign.error,
        "watch_text": _watch_text(campaign, now),
    }


def _watch_text(campaign, now):
    """'Watching: 12 new since 14:05 UTC, until 2027-01-02': what watching found."""
    if not campaign.watch or campaign.status != Campaign.Status.RUNNING:
        return ""
    until = f"until {campaign.watch_until:%Y-%m-%d %H:%M} UTC"
    if not campaign.watching_since:
        return f"Watching for newcomers once every account found so far is in, {until}."
    since = f"{campaign.watching_since:%Y-%m-%d %H:%M} UTC"
    rescan = " (reading every list again now)" if campaign.rescanning else ""
    return f"Watching: {campaign.watched:,} new since {since}, {until}{rescan}."


def _skipped_text(campaign):
    """'12 (8 you follow them, 3 on your never-block list, 1 already blocked or muted)'."""
    reasons = [
        f"{campaign.skipped_by[reason]:,} {reason.label}"
        for reason in SkipReason
        if campaign.skipped_by.get(reason)
    ]
    count = f"{campaign.skipped:,}"
    return f"{count} ({', '.join(reasons)})" if reasons else count


def _found_by(campaign):
    """'2,000 likes, 500 reposts, 0 quotes': what each of a post's lists gave so far."""
    return ", ".join(
        f"{campaign.found_by.get(group, 0):,} {group}" for group in campaign.post_groups
    )


def _at(moment, now):
    """'14:05 UTC (in 8 min)': a time a person can act on, with how far off it is."""
    seconds = (moment - now).total_seconds()
    when = "now" if seconds < 60 else f"in {estimate.duration_text(seconds)}"
    return f"{moment:%H:%M} UTC ({when})"


def _summary(campaign):
    verb = {"block": "Blocked", "mute": "Muted"}[campaign.action]
    doing = {"block": "blocking", "mute": "muting"}[campaign.action]
    if campaign.status == Campaign.Status.DONE:
        done = f"{verb} {campaign.acted:,} of the {campaign.found:,} accounts found."
        if campaign.also_mute and campaign.muted < campaign.acted:
            return f"{done} Muting them: {campaign.muted:,} so far."
        return done
    if campaign.status == Campaign.Status.FAILED:
        return f"Stopped after {doing} {campaign.acted:,} accounts."
    if campaign.status == Campaign.Status.CANCELLED:
        return f"Cancelled after {doing} {campaign.acted:,} accounts."
    return f"{verb} {campaign.acted:,} of about {campaign.expected:,} so far."


@login_required
def campaigns(request):
    rows = Campaign.objects.filter(user=request.user).order_by("-created_at")[:100]
    return render(request, "blocking/campaigns.html", {"campaigns": rows})


@login_required
def blocks(request):
    page = blocklist.page_for(
        request.user,
        query=request.GET.get("q", ""),
        after=request.GET.get("after", ""),
        before=request.GET.get("before", ""),
    )
    return render(request, "blocking/blocks.html", {"page": page, "q": page.query})


@login_required
@require_POST
def undo_one(request, pk):
    row = get_object_or_404(ActionRecord, pk=pk, owner=request.user)
    with transaction.atomic():
        # The record row goes now; an interactive batch keeps what the undo needs.
        upkeep.lift(
            [(row.pk, row.owner_id, row.kind, row.subject_did, row.subject_handle, row.rkey)],
            interactive=True,
        )
    messages.success(
        request, f"Undoing the {row.kind} of @{row.subject_handle or row.subject_did}."
    )
    return redirect("blocks")


def _undo_all_lifts(request):
    count = ActionRecord.objects.filter(owner=request.user).count()
    return f"This lifts all {count:,} blocks and mutes made here, a batch at a time."


@login_required
@require_POST
@fresh_sign_in(_undo_all_lifts)
def undo_all(request):
    # Lifting is data: the expiry task lifts them in bounded batches, spread over time
    # rather than in one burst, as the person's write budget allows.
    count = ActionRecord.objects.filter(owner=request.user).count()
    LinkedAccount.objects.filter(user=request.user).update(lift_all_requested_at=timezone.now())
    messages.success(
        request,
        f"Undoing {count:,} blocks and mutes, a batch at a time; they leave this list as"
        " Bluesky confirms each one.",
    )
    return redirect("blocks")


@login_required
def never_block(request):
    """The person's never-block list: accounts no campaign blocks or mutes, whatever list
    they are found on. A handle is checked on Bluesky when it is added."""
    account = LinkedAccount.objects.filter(user=request.user).first()
    form = None
    if account is not None:
        with client_for(account) as client:
            form = TrustedForm(request.POST or None, client=client, account=account)
            valid = request.method == "POST" and form.is_valid()
        if valid:
            profile = form.profile
            _, added = Trusted.objects.update_or_create(
                owner=request.user, did=profile.did, defaults={"handle": profile.handle}
            )
            text = "is on" if added else "was already on"
            messages.success(request, f"@{profile.handle} {text} your never-block list.")
            return redirect("never_block")
    rows = Trusted.objects.filter(owner=request.user).order_by("handle")
    return render(
        request, "blocking/never_block.html", {"form": form, "rows": rows, "account": account}
    )


@login_required
@require_POST
def never_block_remove(request, pk):
    row = get_object_or_404(Trusted, pk=pk, owner=request.user)
    row.delete()
    messages.success(request, f"@{row.handle} is off your never-block list.")
    return redirect("never_block")
