import html
import re
from unittest import mock

import pytest
from bluesky.tests.authorize import decide
from django.contrib.auth import get_user_model

from blocking import batches, buckets
from blocking.models import LinkedAccount

APP_PASSWORD = "abcd-efgh-ijkl-mnop"
# The password of accounts made on the fake for signing in with Bluesky.
BLUESKY_PASSWORD = "alice-app-pass"


@pytest.fixture
def person(client, fakesky, settings):
    """A signed-in person whose Bluesky account is linked through the real link page."""
    settings.BLUESKY_SERVICE_URL = fakesky.url

    def make(username="alice", follows=()):
        handle = f"{username}.fake.test"
        fakesky.account(handle, APP_PASSWORD, follows=follows)
        user = get_user_model().objects.create_user(username, password="pw-" + username)
        buckets.bucket_for(user)
        client.force_login(user)
        response = client.post("/link/", {"handle": handle, "app_password": APP_PASSWORD})
        assert response.status_code == 302, response.content
        user.handle = handle
        user.account = LinkedAccount.objects.get(user=user)
        return user

    return make


@pytest.fixture
def bluesky(settings, fakesky, live_server):
    """Sign in with Bluesky switched on, against the fake; sign_in(client, handle) goes
    through the whole dance and answers the callback's response. A grant let go is revoked
    in this process when its task is sent (there is no broker here)."""
    task = batches.revoke_unlinked_grant
    revoke_here = mock.patch.object(
        task, "delay", side_effect=lambda grant: task.apply(args=[grant])
    )
    settings.BLUESKY_SERVICE_URL = settings.BLUESKY_PLC_URL = fakesky.url
    fakesky.configure(indexing_delay_s=0, oauth_allow_loopback_clients=True)
    host = live_server.url.split("://", 1)[1]

    class Bluesky:
        fake = fakesky
        host = live_server.url.split("://", 1)[1]

        @staticmethod
        def account(handle):
            fakesky.account(handle, BLUESKY_PASSWORD)
            return fakesky.did(handle)

        @staticmethod
        def start(client, handle, next_url=""):
            return client.post(
                "/oauth/signin", {"handle": handle, "next": next_url}, HTTP_HOST=host
            )

        @staticmethod
        def onward(response):
            """Where the page after "Sign in with Bluesky" sends the browser on to."""
            found = re.search(r'<a href="([^"]+)" id="signin-go">', response.content.decode())
            assert found, response.content[:500]
            return html.unescape(found[1])

        @classmethod
        def sign_in(
            cls, client, handle, decision="approve", next_url="", password=BLUESKY_PASSWORD
        ):
            response = cls.start(client, handle, next_url)
            assert response.status_code == 200, response.content[:500]
            query, location = decide(cls.onward(response), handle, password, decision)
            assert location.startswith(f"http://{host}/oauth/callback?")
            return client.get("/oauth/callback", query, HTTP_HOST=host)

    with revoke_here:
        yield Bluesky
