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

import logging

from bluesky.errors import NotFound, ProviderError
from bluesky.oauth import FALLBACK_SCOPE, GrantRevoked, OAuthError, granular_scope
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.db import IntegrityError, transaction
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_POST

from core.signin import mark_fresh

from . import buckets, crypto, network
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


def _next_url(request, value):
    if value and url_has_allowed_host_and_scheme(
        value, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return value
    return ""


def _failed(request, text, status=400):
    return render(request, "blocking/signin_failed.html", {"reason": text}, status=status)


@require_POST
def start(request):
    """Sign in (or link, or confirm it is you) with Bluesky: to the person's PDS."""
    _require_oauth()
    handle = request.POST.get("handle", "").strip()
    if not handle:
        return _failed(request, "Type your Bluesky handle (like alice.bsky.social) first.")
    try:
        with network.oauth_client(client_id(request), _redirect_uri(request)) as client:
            url, pending = client.start(handle, scope())
    except NotFound:
        return _failed(request, f"Bluesky knows no account @{handle.lstrip('@')}.", status=404)
    except (OAuthError, GrantRevoked) as error:
        log.info("sign in with Bluesky: %s: %s", handle, error)
        return _failed(request, f"Your Bluesky server cannot sign you in here: {error}")
    except ProviderError as error:
        log.info("sign in with Bluesky: %s: %s", handle, error)
        return _failed(request, "Bluesky did not answer. Wait a minute and try again.", status=503)
    pending["next"] = _next_url(request, request.POST.get("next", ""))
    pending["client_id"] = client_id(request)
    kept = request.session.get(PENDING, {})
    kept = dict(list(kept.items())[-(MAX_PENDING - 1) :]) if kept else {}
    kept[pending["state"]] = pending
    request.session[PENDING] = kept
    return redirect(url)


def _username_for(did):
    User = get_user_model()
    base = did.replace(":", "_")[:140]
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
        user, replaced = _link(request, grant)
    except PermissionError as error:
        network.revoke_grant(grant.to_json())
        return _failed(request, str(error), status=409)
    for old in replaced:
        network.revoke_grant(old)
    if not request.user.is_authenticated or request.user.pk != user.pk:
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    else:
        mark_fresh(request)  # the same person signed in again at their PDS
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


def _link(request, grant):
    """The Shoestring user this grant signs in, with the grant stored on their link; and the
    grants it replaced (to revoke). PermissionError if the Bluesky account is someone else's."""
    User = get_user_model()
    replaced = []
    with transaction.atomic():
        linked = LinkedAccount.objects.select_for_update().filter(did=grant.did).first()
        if request.user.is_authenticated:
            user = request.user
            if linked and linked.user_id != user.pk:
                raise PermissionError(
                    f"@{grant.handle} is linked to another Shoestring account. Sign out, then"
                    " sign in with Bluesky to use that one. Nothing was changed."
                )
            account = LinkedAccount.objects.select_for_update().filter(user=user).first()
        elif linked:
            user, account = linked.user, linked
        else:
            try:
                with transaction.atomic():
                    user = User.objects.create_user(username=_username_for(grant.did))
            except IntegrityError:
                raise PermissionError("Two sign-ins at once: start again.") from None
            account = None
        account = account or LinkedAccount(user=user)
        if account.oauth_grant_encrypted:
            replaced.append(crypto.decrypt(account.oauth_grant_encrypted))
        account.handle, account.did, account.service_url = grant.handle, grant.did, grant.pds_url
        account.oauth_grant_encrypted = crypto.encrypt(grant.to_json())
        # An OAuth link keeps no password, nor an app password's session.
        account.app_password_encrypted = ""
        account.access_jwt_encrypted = account.refresh_jwt_encrypted = ""
        account.api_enabled, account.disabled_reason = True, ""
        account.unlink_requested_at = None
        account.save()
    return user, replaced
