"""The front door as a password guesser meets it, through nginx: the app refuses an
account after app_signin_failure_limit wrong passwords (the right one too), and nginx
refuses a client address that sends the password forms faster than nginx_signin_*. The
admin asks staff for their authenticator's code after the password.

The guesser is curl on the host, sending to the host's own network address (nginx does
not limit loopback, the operator's tunnel): an address of its own, so the browser
journey's is never locked.
"""

import base64
import hashlib
import hmac
import json
import re
import struct
import time

import pytest
from shoestring_host import manage_shell

GUESSES = 25
APP_LOCKED = "Sign-in paused"
NGINX_LIMITED = "Too many sign-in forms"


class Client:
    """curl from the host to nginx, connecting to `address` for the name localhost."""

    def __init__(self, host, address, name):
        self.host, self.address = host, address
        self.jar = f"/var/lib/shoestring-tests/{name}.cookies"
        host.check_output("mkdir -p /var/lib/shoestring-tests && rm -f %s", self.jar)

    def request(self, path, form=None):
        """(HTTP status, body) of a GET, or of a POST of the form with the page's token."""
        args = ["--resolve", f"localhost:443:{self.address}", "-b", self.jar, "-c", self.jar]
        if form is not None:
            _, page = self.request(path)
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
            form = dict(form, csrfmiddlewaretoken=token[1] if token else "")
            args += ["-H", "Origin: https://localhost", "-H", f"Referer: https://localhost{path}"]
            for name, value in form.items():
                args += ["--data-urlencode", f"{name}={value}"]
        out = self.host.run(
            "curl -sk -w '\\n%%{http_code}' " + " ".join(["%s"] * len(args)) + " %s",
            *args,
            f"https://localhost{path}",
        ).stdout
        body, _, status = out.rpartition("\n")
        return int(status), body


def answered_by(status, body):
    if status == 429 and APP_LOCKED in body:
        return "app"
    if status == 429 and NGINX_LIMITED in body:
        return "nginx"
    return str(status)


@pytest.fixture
def accounts(host):
    stamp = int(time.time())
    names = {"target": f"door{stamp}", "bystander": f"door{stamp}b"}
    code = "from django.contrib.auth import get_user_model; U = get_user_model();" + "".join(
        f" U.objects.create_user({name!r}, password='right-{name}');" for name in names.values()
    )
    manage_shell(host, code + " print('ok')")
    address = host.check_output("hostname -I").split()[0]
    yield names, address
    host.run("shoestring-manage axes_reset_ip %s", address)
    for name in names.values():
        host.run("shoestring-manage axes_reset_username %s", name)
    manage_shell(
        host,
        "from django.contrib.auth import get_user_model;"
        f" get_user_model().objects.filter(username__in={list(names.values())!r}).delete();"
        " print('ok')",
    )


def test_guessing_is_refused_by_the_app_then_by_nginx(host, accounts):
    names, address = accounts
    guesser = Client(host, address, "guesser")
    started = time.monotonic()
    answers = [
        answered_by(
            *guesser.request(
                "/accounts/login/", {"username": names["target"], "password": f"guess-{n}"}
            )
        )
        for n in range(1, GUESSES + 1)
    ]
    elapsed = time.monotonic() - started
    limit = 5  # app_signin_failure_limit's default
    assert answers[: limit - 1] == ["200"] * (limit - 1), answers  # the form, with its error
    assert answers[limit - 1] == "app", answers
    passed_nginx = [answer for answer in answers if answer != "nginx"]
    assert set(passed_nginx[limit:]) <= {"app"}, answers  # locked from then on
    # nginx_signin_burst (10) at once above the rate, then one every 6 s (10 a minute).
    assert 11 <= len(passed_nginx) <= 11 + int(elapsed / 6) + 1, (elapsed, answers)
    # nginx turns the rest away to the end; which of them got through is the clock's (one on
    # each 6 s refill, possibly the very last, as a run of the sqs scenario saw).
    assert "nginx" in answers[-3:], answers

    # The right password is refused too, from anywhere: the account is locked.
    from_loopback = Client(host, "127.0.0.1", "owner")
    right = {"username": names["target"], "password": f"right-{names['target']}"}
    assert answered_by(*from_loopback.request("/accounts/login/", right)) == "app"

    # Another person is not affected.
    other = {"username": names["bystander"], "password": f"right-{names['bystander']}"}
    assert answered_by(*from_loopback.request("/accounts/login/", other)) == "302"

    # Then nginx lets the address send one form every 6 s (the app still refuses it).
    passes = []
    deadline = time.monotonic() + 30
    while len(passes) < 2 and time.monotonic() < deadline:
        if answered_by(*guesser.request("/accounts/login/", right)) == "app":
            passes.append(time.monotonic())
        time.sleep(0.5)
    assert len(passes) == 2, f"nginx let {len(passes)} forms through in 30 s"
    interval = passes[1] - passes[0]
    assert 4 <= interval <= 10, interval
    first_nginx = answers.index("nginx") + 1
    print(
        f"\nthrough nginx, {GUESSES} wrong passwords in {elapsed:.1f} s: the app refused the"
        f" account from guess {limit} on (the right password too, for the 15-minute cool-off);"
        f" nginx refused the address from POST {first_nginx} on ({len(passed_nginx)} passed it),"
        f" then let one through every {interval:.1f} s"
    )


def totp_now(key_base32, step=30, digits=6):
    """RFC 6238 with the standard library: the code an authenticator app shows now."""
    key = base64.b32decode(key_base32)
    counter = struct.pack(">Q", int(time.time()) // step)
    mac = hmac.new(key, counter, hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{number % 10**digits:0{digits}d}"


def test_the_admin_asks_staff_for_their_authenticators_code(host):
    name = f"staff{int(time.time())}"
    manage_shell(
        host,
        "from django.contrib.auth import get_user_model;"
        f" get_user_model().objects.create_superuser({name!r}, password='right-{name}');"
        " print('ok')",
    )
    try:
        printed = host.check_output("shoestring-manage staff_totp %s", name)
        assert f"otpauth://totp/Shoestring%3A{name}?secret=" in printed
        key = re.search(r"key: ([A-Z2-7]+)", printed)[1]
        staff = Client(host, "127.0.0.1", "staff")  # the admin answers on loopback only
        status, page = staff.request("/admin/login/")
        assert (status, "OTP Token" in page) == (200, True)
        form = {"username": name, "password": f"right-{name}"}
        status, page = staff.request("/admin/login/?next=/admin/", form)
        assert status == 200  # the password alone: the form again, now with their device
        assert staff.request("/admin/")[0] == 302
        select = re.search(r'<select name="otp_device".*?</select>', page, flags=re.DOTALL)
        devices = [v for v in re.findall(r'<option value="([^"]*)"', select[0]) if v]
        assert len(devices) == 1, select[0]  # the one staff_totp made: the person picks it
        form.update(otp_device=devices[0], otp_token=totp_now(key))
        assert staff.request("/admin/login/?next=/admin/", form)[0] == 302
        status, page = staff.request("/admin/")
        assert status == 200
        assert "Site administration" in page
    finally:
        manage_shell(
            host,
            "from django.contrib.auth import get_user_model;"
            f" get_user_model().objects.filter(username={name!r}).delete(); print('ok')",
        )


def test_sign_in_with_bluesky_publishes_the_clients_metadata_and_public_key(host):
    """What an authorization server fetches, through nginx: the metadata whose URL is the
    client_id, and a JWKS holding the public half of the key in the app's settings only."""
    client = Client(host, "127.0.0.1", "oauth")
    status, body = client.request("/oauth/client-metadata.json")
    assert status == 200, body
    meta = json.loads(body)
    assert meta["client_id"] == "https://localhost/oauth/client-metadata.json"
    assert meta["redirect_uris"] == ["https://localhost/oauth/callback"]
    assert meta["jwks_uri"] == "https://localhost/oauth/jwks.json"
    assert meta["token_endpoint_auth_method"] == "private_key_jwt"
    status, body = client.request("/oauth/jwks.json")
    assert status == 200, body
    (key,) = json.loads(body)["keys"]
    assert "d" not in key
    # The same key the web app and the network pools were given, and no other.
    env = host.file("/etc/shoestring/shoestring.env").content_string
    encoded = re.search(r'^SHOESTRING_OAUTH_CLIENT_KEY="?([A-Za-z0-9+/=]+)', env, re.M)[1]
    public = host.run(
        "echo %s | base64 -d | openssl ec -pubout -outform DER 2>/dev/null | base64 -w0", encoded
    )
    assert public.rc == 0, public.stderr
    der = base64.b64decode(public.stdout)
    # A P-256 SubjectPublicKeyInfo ends with 0x04 || X || Y (32 bytes each).
    x, y = der[-64:-32], der[-32:]
    assert base64.urlsafe_b64encode(x).rstrip(b"=").decode() == key["x"]
    assert base64.urlsafe_b64encode(y).rstrip(b"=").decode() == key["y"]
    bulk = host.file("/etc/shoestring/worker-bulk.env").content_string
    assert f"SHOESTRING_OAUTH_CLIENT_KEY={encoded}" in bulk.replace('"', "")
