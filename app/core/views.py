import logging

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

log = logging.getLogger(__name__)


def home(request):
    return render(request, "core/home.html")


@never_cache
@require_GET
def healthz(request):
    """200 when the database answers, 503 when it does not: what nginx and monitors probe.
    The X-Shoestring-Release header names the release that answered."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as error:
        log.warning("healthz: database unreachable: %s", error)
        response = HttpResponse("database unavailable\n", status=503, content_type="text/plain")
    else:
        response = HttpResponse("ok\n", content_type="text/plain")
    response["X-Shoestring-Release"] = settings.SHOESTRING_RELEASE
    return response
