"""The OAuth errors of the reference provider: RFC 6749 bodies, their statuses, and the
WWW-Authenticate header some of them carry.

Checked against bluesky-social/atproto packages/oauth/oauth-provider/src/errors/ (oauth-error.ts:
400 unless said, body {"error", "error_description"}; www-authenticate-error.ts: 401 and a
header whose DPoP challenge lists the accepted algorithms first, a parameter whose value holds a
double quote left out; use-dpop-nonce-error.ts: 400 at the authorization server, the 401
challenge at a resource server; invalid-dpop-proof-error.ts, invalid-token-error.ts,
invalid-dpop-key-binding-error.ts) and packages/oauth/oauth-scopes/src/scope-missing-error.ts
(403, which the PDS's XRPC layer names after the class: "ScopeMissingError").
"""

from .jose import VERIFY_ALGOS


class OAuthError(Exception):
    def __init__(self, error, description, status=400, challenge=None):
        super().__init__(description)
        self.error, self.description, self.status = error, description, status
        self.challenge = challenge  # {"DPoP": {...}} or {"Bearer": {...}}: WWW-Authenticate

    def body(self):
        return {"error": self.error, "error_description": self.description}

    def www_authenticate(self):
        if not self.challenge:
            return None
        entries = []
        for scheme, params in self.challenge.items():
            if scheme == "DPoP":
                params = {"algs": " ".join(VERIFY_ALGOS), **params}
            shown = [f'{k}="{v}"' for k, v in params.items() if v and '"' not in v]
            entries.append(f"{scheme} {', '.join(shown)}" if shown else scheme)
        return ", ".join(entries)


def invalid_request(description):
    return OAuthError("invalid_request", description)


def invalid_grant(description):
    return OAuthError("invalid_grant", description)


def invalid_client(description):
    return OAuthError("invalid_client", description)


def invalid_scope(description):
    return OAuthError("invalid_scope", description)


def invalid_client_metadata(description):
    return OAuthError("invalid_client_metadata", description)


def invalid_client_id(description):
    return OAuthError("invalid_client_id", description)


def invalid_redirect_uri(description):
    return OAuthError("invalid_redirect_uri", description)


def access_denied(description="Access denied"):
    return OAuthError("access_denied", description)


class UseDpopNonce(OAuthError):
    """400 at the authorization server; at_resource_server() is the 401 a PDS answers."""

    def __init__(self, description="Authorization server requires nonce in DPoP proof"):
        super().__init__("use_dpop_nonce", description)

    def at_resource_server(self):
        error = OAuthError(self.error, self.description, 401)
        error.challenge = {"DPoP": {"error": self.error, "error_description": self.description}}
        return error


def _challenged(error, description, scheme):
    return OAuthError(
        error, description, 401, {scheme: {"error": error, "error_description": description}}
    )


def invalid_dpop_proof(description):
    return _challenged("invalid_dpop_proof", description, "DPoP")


def invalid_token(description, scheme="DPoP"):
    return _challenged("invalid_token", description, scheme)


def invalid_dpop_key_binding():
    return _challenged("invalid_token", "Invalid DPoP key binding", "DPoP")


class ScopeMissing(Exception):
    """scope-missing-error.ts: 403, the scope that would have allowed the call."""

    status = 403
    error = "ScopeMissingError"

    def __init__(self, scope):
        super().__init__(f'Missing required scope "{scope}"')
        self.scope = scope
        self.message = str(self)
