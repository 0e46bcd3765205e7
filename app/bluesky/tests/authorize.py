"""A person at the fake PDS's authorize page, as a browser without JavaScript would be: read
the form, fill in the handle and password, press a button, and follow nothing further."""

from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx


class _Form(HTMLParser):
    def __init__(self):
        super().__init__()
        self.action = None
        self.fields = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = attrs.get("action") or ""
        elif tag == "input" and attrs.get("name") and attrs.get("type") not in ("submit",):
            self.fields[attrs["name"]] = attrs.get("value") or ""


def decide(authorize_url, handle, password, decision="approve"):
    """Post the authorize page's form; return the redirect's query (code, state, iss or
    error) and the redirect URL itself. AssertionError if the page does not redirect."""
    with httpx.Client(timeout=10, follow_redirects=False) as http:
        page = http.get(authorize_url)
        assert page.status_code == 200, page.text[:500]
        form = _Form()
        form.feed(page.text)
        fields = {**form.fields, "username": handle, "password": password, "decision": decision}
        answer = http.post(urljoin(authorize_url, form.action or authorize_url), data=fields)
    assert answer.status_code in (302, 303), f"{answer.status_code}: {answer.text[:500]}"
    location = answer.headers["location"]
    query = {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}
    return query, location
