"""Sign in with Bluesky: the app's side of atproto OAuth (bluesky.oauth does the protocol).

The person types their handle; the app finds their PDS and its authorization server, pushes
the request and sends the browser there; the PDS signs them in and asks them to approve the
app's scopes; the callback trades the code for DPoP-bound tokens and signs the person in to
Shoestring: the account linked to that DID if there is one, else a new one with no password
(one identity, no second secret). Someone already signed in links the account instead.
Signing in again this way also counts as the fresh sign-in that lifting protection needs.

The client_id is this site's own /oauth/client-metadata.json under the name the browser used
(one per host name nginx serves), so the metadata, the redirect URI and the JWKS always
agree with what the authorization server fetches.
"""

import ipaddress
import json
import logging

from bluesky.errors import NotFound, ProviderError
from bluesky.oauth import FALLBACK_SCOPE, GrantRevoked, OAuthError, granular_scope
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.db import IntegrityError, connection, transaction
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_POST

from core.signin import SIGNED_IN_AT, is_fresh, mark_fresh, same_site

from . import buckets, crypto, network
from .batches import revoke_later
from .models import LinkedAccount

log = logging.getLogger(__name__)

PENDING = "shoestring_oauth_pending"
# Sign-ins started and not finished that a session keeps (the oldest go first).
MAX_PENDING = 3


def _require_oauth():
    if not network.oauth_enabled():
        raise Http404("Sign in with Bluesky is not configured here")


def client_id(request):
    return request.build_absolute_uri(reverse("oauth_client_metadata"))


def _redirect_uri(request):
    return request.build_absolute_uri(reverse("oauth_callback"))


def scope():
    return granular_scope(settings.BLUESKY_APPVIEW_AUDIENCE)


@require_GET
@cache_control(public=True, max_age=300)
def client_metadata(request):
    """The client's metadata document: its URL is its client_id (atproto OAuth)."""
    _require_oauth()
    origin = request.build_absolute_uri("/").rstrip("/")
    return JsonResponse(
        {
            "client_id": client_id(request),
            "client_name": "Shoestring",
            "client_uri": origin,
            "application_type": "web",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "redirect_uris": [_redirect_uri(request)],
            # What it asks for, and the fallback for a PDS without granular scopes.
            "scope": f"{scope()} {FALLBACK_SCOPE.split()[1]}",
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "ES256",
            "jwks_uri": request.build_absolute_uri(reverse("oauth_jwks")),
            "dpop_bound_access_tokens": True,
        }
    )


@require_GET
@cache_control(public=True, max_age=300)
def jwks(request):
    """The public half of the client's key: what its client assertions are checked with."""
    _require_oauth()
    public = network.oauth_client_key().as_dict(private=False)
    return JsonResponse({"keys": [{**public, "use": "sig", "alg": "ES256"}]})


def _failed(request, text, status=400):
    return render(request, "blocking/signin_failed.html", {"reason": text}, status=status)


def _addressed_by_ip(request):
    host = request.get_host().rsplit(":", 1)[0].strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    return True


@require_POST
def start(request):
    """Sign in (or link, or confirm it is you) with Bluesky: to the person's PDS. Someone
    signed in already is asked for their Bluesky password again (prompt=login), whatever
    session their browser holds there: that is what makes it a fresh confirmation."""
    _require_oauth()
    handle = request.POST.get("handle", "").strip()
    if not handle:
        return _failed(request, "Type your Bluesky handle (like alice.bsky.social) first.")
    if _addressed_by_ip(request) and not settings.BLUESKY_ALLOW_LOOPBACK_PDS:
        # Bluesky refuses a client_id on an address (oauth-client-id-discoverable.ts).
        return _failed(
            request,
            "Sign in with Bluesky works at this site's domain name only, not at an address:"
            " open it by its name, or link with an app password.",
        )
    prompt = "login" if request.user.is_authenticated else ""
    try:
        with network.oauth_client(client_id(request), _redirect_uri(request)) as client:
            url, pending = client.start(handle, scope(), prompt=prompt)
    except NotFound:
        return _failed(request, f"Bluesky knows no account @{handle.lstrip('@')}.", status=404)
    except (OAuthError, GrantRevoked) as error:
        log.info("sign in with Bluesky: %s: %s", handle, error)
        return _failed(request, f"Your Bluesky server cannot sign you in here: {error}")
    except ProviderError as error:
        log.info("sign in with Bluesky: %s: %s", handle, error)
        return _failed(request, "Bluesky did not answer. Wait a minute and try again.", status=503)
    pending["next"] = same_site(request, request.POST.get("next", ""))
    pending["client_id"] = client_id(request)
    kept = request.session.get(PENDING, {})
    kept = dict(list(kept.items())[-(MAX_PENDING - 1) :]) if kept else {}
    # The PKCE verifier and the DPoP key wait in the session table, encrypted.
    kept[pending["state"]] = crypto.encrypt(json.dumps(pending))
    request.session[PENDING] = kept
    # A page that moves on by itself rather than a redirect: a form's redirect to another
    # origin would need the CSP's form-action to allow every server a person may use.
    return render(request, "blocking/signin_redirect.html", {"url": url})


def _username_for(base):
    """base, or base_2, base_3 ... if it is taken."""
    User = get_user_model()
    name, n = base, 1
    while User.objects.filter(username=name).exists():
        n += 1
        name = f"{base}_{n}"
    return name


@require_GET
def callback(request):
    """The authorization server sends the browser back here with a code (or an error)."""
    _require_oauth()
    kept = request.session.get(PENDING, {})
    pending = kept.pop(request.GET.get("state", ""), None)
    request.session[PENDING] = kept
    request.session.save()  # spent before the code is, so a replayed callback finds nothing
    if pending is not None:
        pending = json.loads(crypto.decrypt(pending))
    if pending is None:
        return _failed(
            request,
            "This sign-in was not started in this browser, or it was finished already."
            " Start again.",
        )
    if request.GET.get("error") == "access_denied":
        return _failed(request, "You did not approve Shoestring on Bluesky. Nothing was changed.")
    try:
        with network.oauth_client(pending["client_id"], pending["redirect_uri"]) as client:
            grant = client.finish(pending, request.GET.dict())
    except (OAuthError, GrantRevoked) as error:
        log.info("sign in with Bluesky: callback: %s", error)
        return _failed(request, f"Bluesky did not sign you in: {error}. Nothing was changed.")
    except ProviderError:
        return _failed(
            request, "Bluesky did not answer. Nothing was changed; start again.", status=503
        )
    try:
        user = _link(request, grant, fresh=pending.get("prompt") == "login")
    except PermissionError as error:
        revoke_later(crypto.encrypt(grant.to_json()))  # made for nothing
        return _failed(request, str(error), status=409)
    if not request.user.is_authenticated or request.user.pk != user.pk:
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        # A sign-in the browser's session at the PDS may have approved by itself is not
        # a fresh confirmation: lifting protection asks again, with prompt=login.
        request.session.pop(SIGNED_IN_AT, None)
    elif pending.get("prompt") == "login":
        mark_fresh(request)  # the same person typed their Bluesky password again
    buckets.bucket_for(user)
    messages.success(request, f"Signed in with Bluesky as @{grant.handle}.")
    if not grant.granular:
        messages.warning(
            request,
            "Your Bluesky server does not offer narrow permissions, so it granted Shoestring"
            " what an app password allows (transition:generic). Shoestring still only blocks,"
            " mutes and reads.",
        )
    return redirect(pending.get("next") or "campaign_new")


def _link(request, grant, fresh):
    """The Shoestring user this grant signs in, with the grant stored on their link (the one
    it replaces is revoked). PermissionError if the Bluesky account is someone else's,
    if a signed-in person would swap their link for another Bluesky account without a fresh
    confirmation (fresh: they typed their Bluesky password just now), or for staff."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            # The rotated tokens must survive a crash (the server's default is off).
            cursor.execute("SET LOCAL synchronous_commit = on")
        linked = LinkedAccount.objects.select_for_update().filter(did=grant.did).first()
        if request.user.is_authenticated:
            user = request.user
            if linked and linked.user_id != user.pk:
                raise PermissionError(
                    f"@{grant.handle} is linked to another Shoestring account. Sign out, then"
                    " sign in with Bluesky to use that one. Nothing was changed."
                )
            account = LinkedAccount.objects.select_for_update().filter(user=user).first()
            if account and account.did != grant.did and not (fresh or is_fresh(request)):
                raise PermissionError(
                    f"Your campaigns act for @{account.handle}: to link @{grant.handle}"
                    " instead, sign in again first. Nothing was changed."
                )
            relink = True
        elif linked:
            user, account, relink = linked.user, linked, False
        else:
            user, account, relink = _user_for_new_sign_in(grant.did), None, True
        if user.is_staff:
            raise PermissionError(
                "Staff sign in with their Shoestring password and authenticator code."
                " Nothing was changed."
            )
        account = account or LinkedAccount(user=user)
        if account.oauth_grant_encrypted:
            revoke_later(account.oauth_grant_encrypted)
        account.handle, account.did, account.service_url = grant.handle, grant.did, grant.pds_url
        account.oauth_grant_encrypted = crypto.encrypt(grant.to_json())
        # An OAuth link keeps no password, nor an app password's session.
        account.app_password_encrypted = ""
        account.access_jwt_encrypted = account.refresh_jwt_encrypted = ""
        # The new grant is what a disabled account was waiting for.
        account.api_enabled, account.disabled_reason = True, ""
        if relink:
            # Linking anew ends an unlink in progress; only signing in does not.
            account.unlink_requested_at = None
        account.save()
    return user


def _user_for_new_sign_in(did):
    """A new Shoestring user for this DID, or the one it had before an unlink (no password,
    no link), so that their campaigns and held blocks are theirs again."""
    User = get_user_model()
    base = did.replace(":", "_")[:140]
    earlier = (
        User.objects.filter(username=base, linked_account__isnull=True)
        .filter(password__startswith=UNUSABLE_PASSWORD_PREFIX)
        .first()
    )
    if earlier is not None:
        return earlier
    try:
        with transaction.atomic():
            return User.objects.create_user(username=_username_for(base))
    except IntegrityError:
        raise PermissionError("Two sign-ins at once: start again.") from None
