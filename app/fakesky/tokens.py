"""Session tokens: HS256 JWTs, as the reference PDS issues and checks them.

Checked against bluesky-social/atproto packages/pds/src/account-manager/helpers/auth.ts
(access token: header typ "at+jwt", claims scope, aud, sub, iat, exp, 120 minutes; refresh
token: typ "refresh+jwt", scope "com.atproto.refresh", jti, 90 days) and
packages/pds/src/auth-verifier.ts (an expired token is 400 ExpiredToken "Token has expired";
any other failure 400 InvalidToken "Token could not be verified"; a wrong scope 400
InvalidToken "Bad token scope"). Standard library only: hmac + sha256.
"""

import base64
import hashlib
import hmac
import json
import time

ACCESS_TYP = "at+jwt"
REFRESH_TYP = "refresh+jwt"
# Scopes, from packages/pds/src/auth-scope.ts. A session made with an app password
# carries "com.atproto.appPass".
SCOPE_ACCESS = "com.atproto.access"
SCOPE_APP_PASS = "com.atproto.appPass"  # noqa: S105 (a scope name, not a password)
SCOPE_APP_PASS_PRIVILEGED = "com.atproto.appPassPrivileged"  # noqa: S105
SCOPE_REFRESH = "com.atproto.refresh"
ACCESS_SCOPES = (SCOPE_ACCESS, SCOPE_APP_PASS, SCOPE_APP_PASS_PRIVILEGED)


class TokenError(Exception):
    """What the reference answers for a bad bearer token: 400 with this error name."""

    def __init__(self, error, message):
        super().__init__(message)
        self.error = error
        self.message = message


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret, typ, claims):
    header = _b64(json.dumps({"typ": typ, "alg": "HS256"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = _b64(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return f"{header}.{payload}.{signature}"


def unverified_subject(token):
    """The token's "sub" without checking it (to attribute a refused request), or None."""
    try:
        return json.loads(_unb64(token.split(".")[1])).get("sub")
    except (ValueError, IndexError, AttributeError):
        return None


def verify(secret, token, typ, scopes, audience, now=None):
    """The claims of a valid token of this type and scope; raises TokenError otherwise."""
    invalid = TokenError("InvalidToken", "Token could not be verified")
    try:
        header_b64, payload_b64, signature_b64 = token.split(".")
        header = json.loads(_unb64(header_b64))
        claims = json.loads(_unb64(payload_b64))
        signature = _unb64(signature_b64)
    except ValueError as error:
        raise invalid from error
    expected = hmac.new(secret, f"{header_b64}.{payload_b64}".encode(), hashlib.sha256).digest()
    if (
        not isinstance(header, dict)
        or not isinstance(claims, dict)
        or header.get("alg") != "HS256"
        or not hmac.compare_digest(signature, expected)
        or header.get("typ") != typ
        or claims.get("aud") != audience
    ):
        raise invalid
    exp = claims.get("exp")
    if not isinstance(exp, int):
        raise invalid
    if exp <= int(now if now is not None else time.time()):
        raise TokenError("ExpiredToken", "Token has expired")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.startswith("did:"):
        raise TokenError("InvalidToken", "Malformed token")
    if claims.get("scope") not in scopes:
        raise TokenError("InvalidToken", "Bad token scope")
    return claims
