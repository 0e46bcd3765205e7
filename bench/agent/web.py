"""A person in a browser, as far as the benchmark needs one: the app's pages over https on
the host's loopback (through nginx, gunicorn and Django, as a person's browser reaches
them), with cookies, Django's CSRF token and the Origin header a browser sends. The pages are
on the host's loopback, or at BENCH_WEB_HOST (the cluster bench: the web host's address)."""

import http.client
import os
import re
import ssl
import time
from urllib.parse import urlencode

_CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
_ERRORS = re.compile(r'class="[^"]*errorlist[^"]*"[^>]*>(.*?)</ul>', re.S)
_TAGS = re.compile(r"<[^>]+>")
DEFAULT_HOST = os.environ.get("BENCH_WEB_HOST", "127.0.0.1")


class WebError(RuntimeError):
    pass


def _tls():
    # The host's certificate is self-signed (no domain): the benchmark measures, not trusts.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Browser:
    def __init__(self, host=DEFAULT_HOST, port=443, timeout=60.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.origin = f"https://{host}" + ("" if port == 443 else f":{port}")
        self.cookies = {}
        self.password = None
        self._tls = _tls()
        self._connection = None

    def close(self):
        if self._connection:
            self._connection.close()
        self._connection = None

    def request(self, method, path, form=None):
        """(status, headers, body text, seconds); keeps the connection like a browser."""
        body = urlencode(form).encode() if form is not None else None
        headers = {"Host": self.host if self.port == 443 else f"{self.host}:{self.port}"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body is not None:
            headers.update(
                {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Origin": self.origin,
                    "Referer": self.origin + path,
                }
            )
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=self._tls
                )
            started = time.monotonic()
            try:
                self._connection.request(method, path, body=body, headers=headers)
                response = self._connection.getresponse()
                text = response.read().decode(errors="replace")
            except (OSError, http.client.HTTPException) as error:
                self.close()
                if attempt == 2:
                    raise WebError(f"{method} {path}: {error}") from error
                continue
            elapsed = time.monotonic() - started
            for name, value in response.getheaders():
                if name.lower() == "set-cookie":
                    cookie, _, _ = value.partition(";")
                    key, _, val = cookie.partition("=")
                    self.cookies[key.strip()] = val.strip()
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            return response.status, dict(response.getheaders()), text, elapsed
        raise AssertionError("unreachable")

    def _form_token(self, path):
        status, _, text, _ = self.request("GET", path)
        match = _CSRF_INPUT.search(text)
        if status != 200 or not match:
            raise WebError(f"GET {path}: HTTP {status}, no form")
        return match.group(1)

    def submit(self, path, fields):
        """GET the form page, POST it with its CSRF token; (Location, seconds of the POST)."""
        token = self._form_token(path)
        status, headers, text, elapsed = self.request(
            "POST", path, dict(fields, csrfmiddlewaretoken=token)
        )
        if status in (301, 302, 303):
            return headers.get("Location", ""), elapsed
        errors = " ".join(_TAGS.sub(" ", e) for e in _ERRORS.findall(text)).split()
        raise WebError(f"POST {path}: HTTP {status}: {' '.join(errors)[:300] or text[:200]}")

    # -- what a person does ---------------------------------------------------------
    def sign_up(self, username, password):
        self.submit(
            "/signup/", {"username": username, "password1": password, "password2": password}
        )
        self.password = password

    def link(self, handle, app_password):
        self.submit("/link/", {"handle": handle, "app_password": app_password})

    def start_campaign(self, target, scope="followers", duration="4", watch=False):
        """Start a block campaign (watching for newcomers too); (campaign id, seconds the
        POST took)."""
        form = {"target": target, "action": "block", "scope": scope, "duration": duration}
        if watch:
            form["watch"] = "on"
        location, elapsed = self.submit("/campaigns/new/", form)
        match = re.search(r"/campaigns/(\d+)/", location)
        if not match:
            raise WebError(f"starting a campaign led to {location!r}")
        return int(match.group(1)), elapsed

    def undo_all(self):
        token = self._form_token("/blocks/")
        form = {"csrfmiddlewaretoken": token}
        status, _, text, _ = self.request("POST", "/blocks/undo-all/", form)
        if status == 200 and 'name="confirm_password"' in text and self.password:
            # Signed in more than a few minutes ago: the app asks for the password again.
            form["confirm_password"] = self.password
            status, _, _, _ = self.request("POST", "/blocks/undo-all/", form)
        if status not in (302, 303):
            raise WebError(f"POST /blocks/undo-all/: HTTP {status}")
