"""Staff sign in to the admin with a password and a code from their authenticator app
(django-otp TOTP, config/urls.py); the code's device comes from `staff_totp`."""

import io
import re

import pytest
from django.core.management import CommandError, call_command
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

pytestmark = pytest.mark.django_db
PASSWORD = "a staff member's long password"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        "ops", password=PASSWORD, is_staff=True, is_superuser=True
    )


def authenticator(username="ops", *extra):
    out = io.StringIO()
    call_command("staff_totp", username, *extra, stdout=out)
    return out.getvalue()


def code(device):
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"


def sign_in(client, device, token):
    form = {"username": "ops", "password": PASSWORD, "otp_token": token}
    if device is not None:
        form["otp_device"] = device.persistent_id
    return client.post("/admin/login/?next=/admin/", form)


def test_the_admin_lets_staff_in_with_their_password_and_the_code_only(client, staff):
    printed = authenticator()
    link = re.search(r"otpauth://totp/\S+", printed)[0]
    assert link.startswith("otpauth://totp/Shoestring%3Aops?secret=")
    assert "issuer=Shoestring" in link
    device = TOTPDevice.objects.get(user=staff)
    assert re.search(r"key: ([A-Z2-7]+)", printed)[1] in link
    # The password alone is not enough.
    refused = sign_in(client, device, "")
    assert refused.status_code == 200
    assert "OTP Token" in refused.content.decode()
    assert client.get("/admin/").status_code == 302
    # With the code from the authenticator, the admin opens.
    assert sign_in(client, device, code(device)).status_code == 302
    assert client.get("/admin/").status_code == 200


def test_a_wrong_code_is_refused_and_slows_the_next_tries(client, staff):
    authenticator()
    device = TOTPDevice.objects.get(user=staff)
    wrong = f"{(int(code(device)) + 1) % 1_000_000:06d}"
    assert sign_in(client, device, wrong).status_code == 200
    assert client.get("/admin/").status_code == 302
    device.refresh_from_db()
    assert device.throttling_failure_count == 1
    # Right away even the right code waits out the throttle.
    assert sign_in(client, device, code(device)).status_code == 200
    assert client.get("/admin/").status_code == 302


def test_staff_signed_in_on_the_site_give_the_code_before_the_admin_opens(client, staff):
    authenticator()
    client.force_login(staff)
    answer = client.get("/admin/")
    assert answer.status_code == 302
    assert answer["Location"].startswith("/admin/login/")


def test_the_command_refuses_a_person_not_staff_and_replaces_only_when_asked(
    staff, django_user_model
):
    django_user_model.objects.create_user("alice", password=PASSWORD)
    with pytest.raises(CommandError, match="alice is not staff"):
        authenticator("alice")
    with pytest.raises(CommandError, match="no user called 'bob'"):
        authenticator("bob")
    authenticator()
    first = TOTPDevice.objects.get(user=staff).key
    with pytest.raises(CommandError, match="--reset replaces it"):
        authenticator()
    authenticator("ops", "--reset")
    assert TOTPDevice.objects.filter(user=staff).count() == 1
    assert TOTPDevice.objects.get(user=staff).key != first
