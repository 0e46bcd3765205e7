import pytest
from django.contrib.auth import get_user_model

from blocking import buckets
from blocking.models import LinkedAccount

APP_PASSWORD = "abcd-efgh-ijkl-mnop"


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
