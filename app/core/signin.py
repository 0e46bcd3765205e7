"""The front door: failed sign-ins are counted and cooled off (django-axes, its state in
Postgres), and the actions that lift a person's protection ask for a fresh sign-in first.

A guessed password must not be enough to undo every block that protects a harassment
target: "Unblock everybody", unlinking (which stops every campaign) and cancelling a
campaign run only within SHOESTRING_FRESH_SIGN_IN_S of the last sign-in; after that the
page says what will be lifted and asks for the password again, through the same throttle.
"""

import functools
import time
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

SIGNED_IN_AT = "shoestring_signed_in_at"


def client_ip(request):
    """The browser's address: nginx sets X-Real-IP to the address it was connected from
    (replacing any a client sent); gunicorn listens on a socket only nginx can reach.
    Without nginx (tests, the dev server) it is the socket's peer."""
    return request.META.get("HTTP_X_REAL_IP") or request.META.get("REMOTE_ADDR")


def locked_out(request, original_response=None, credentials=None):
    """What a locked-out sign-in is told: why, and until when (429)."""
    until = timezone.now() + settings.AXES_COOLOFF_TIME
    return render(
        request,
        "registration/locked_out.html",
        {
            "failure_limit": settings.AXES_FAILURE_LIMIT,
            "until": until,
            "minutes": round(settings.AXES_COOLOFF_TIME / timedelta(minutes=1)),
        },
        status=429,
    )


def mark_fresh(request):
    request.session[SIGNED_IN_AT] = time.time()


@receiver(user_logged_in)
def note_sign_in(sender, request, user, **kwargs):
    if request is not None and hasattr(request, "session"):
        mark_fresh(request)


def is_fresh(request):
    signed_in_at = request.session.get(SIGNED_IN_AT)
    return signed_in_at is not None and time.time() - signed_in_at < settings.FRESH_SIGN_IN_S


def same_site(request, url):
    """url if it leads back into this site (the host the browser used), else ""."""
    if url and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return ""


def _bluesky_again(request):
    """For a person linked with Bluesky: sign in there again (their DID), then come back to
    the page they pressed the button on and press it again."""
    account = getattr(request.user, "linked_account", None)
    if account is None or not account.uses_oauth:
        return {}
    return {
        "bsky_handle": account.handle or account.did,
        "bsky_next": same_site(request, request.META.get("HTTP_REFERER", "")),
        "bsky_label": "Sign in with Bluesky",
    }


def fresh_sign_in(describe):
    """Decorate a POST view that lifts protection. describe(request, *args, **kwargs) says
    what it will lift; it is shown with the password box when the sign-in is not fresh."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if is_fresh(request):
                return view(request, *args, **kwargs)
            error = ""
            password = request.POST.get("confirm_password", "")
            if password:
                user = authenticate(
                    request, username=request.user.get_username(), password=password
                )
                if getattr(request, "axes_locked_out", False):
                    # AxesMiddleware answers for a locked sign-in, with locked_out's page.
                    return HttpResponse(status=429)
                if user is not None and user.pk == request.user.pk:
                    mark_fresh(request)
                    return view(request, *args, **kwargs)
                error = "That password is not right. Nothing was changed."
            kept = [
                (name, value)
                for name, values in request.POST.lists()
                if name not in ("csrfmiddlewaretoken", "confirm_password")
                for value in values
            ]
            return render(
                request,
                "core/confirm.html",
                {
                    "what": describe(request, *args, **kwargs),
                    "kept": kept,
                    "error": error,
                    "minutes": round(settings.FRESH_SIGN_IN_S / 60),
                    "has_password": request.user.has_usable_password(),
                    **_bluesky_again(request),
                },
                status=403 if error else 200,
            )

        return wrapper

    return decorate
