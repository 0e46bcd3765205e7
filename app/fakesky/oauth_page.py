"""The fake's authorize page: a plain HTML form a person (or Selenium) fills.

The reference serves a JavaScript application (packages/oauth/oauth-provider-ui) that signs the
person in, shows the client and the permissions it asks for, and calls /oauth/authorize/accept
or /reject. The fake keeps what a browser test needs: the client's host, the scopes in words,
#username (prefilled from login_hint), #password, #approve and #deny, posted back to the page's
own URL with the request's client_id and request_uri. No cookie, no script, no inline style
(the demo serves it through nginx, whose Content-Security-Policy allows neither).
"""

from html import escape

from . import scopes


def _document(title, body):
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title></head>"
        f"<body>{body}</body></html>\n"
    ).encode()


def authorize_page(*, client_host, client_name, scope, client_id, request_uri, username, error):
    """The sign-in and consent form of one pushed authorization request."""
    items = "".join(
        f"<li>{escape(scopes.describe(s))} <code>{escape(s)}</code></li>"
        for s in (scope or "").split(" ")
        if s
    )
    who = escape(client_host)
    if client_name:
        who = f"{escape(client_name)} ({who})"
    problem = f'<p class="error" id="error" role="alert">{escape(error)}</p>' if error else ""
    body = (
        "<h1>Sign in to fakesky</h1>"
        f'<p><strong id="client">{who}</strong> asks to access your account:</p>'
        f'<ul id="scopes">{items}</ul>{problem}'
        '<form method="post" action="">'
        f'<input type="hidden" name="client_id" value="{escape(client_id)}">'
        f'<input type="hidden" name="request_uri" value="{escape(request_uri)}">'
        '<label for="username">Handle or DID</label>'
        f'<input id="username" name="username" autocomplete="username" value="{escape(username)}">'
        '<label for="password">App password</label>'
        '<input id="password" name="password" type="password" autocomplete="current-password">'
        '<button id="approve" type="submit" name="decision" value="approve">Approve</button>'
        '<button id="deny" type="submit" name="decision" value="deny" formnovalidate>Deny'
        "</button></form>"
    )
    return _document("Sign in to fakesky", body)


def error_page(error, description):
    body = (
        "<h1>Authorization failed</h1>"
        f'<p class="error" id="error" role="alert">{escape(description)}</p>'
        f"<p><code>{escape(error)}</code></p>"
    )
    return _document("Authorization failed", body)


def form_post_page(redirect_uri, params):
    """response_mode=form_post: a form that posts the result to the client."""
    fields = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in params
    )
    body = (
        f'<form method="post" action="{escape(redirect_uri)}">{fields}'
        '<button type="submit">Continue</button></form>'
        "<script>document.forms[0].submit()</script>"
    )
    return _document("Redirecting", body)
