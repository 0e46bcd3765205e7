"""The fake's OAuth: the reference PDS as its own authorization server and as resource server.

Checked against bluesky-social/atproto (paths under packages/):
- oauth/oauth-provider/src/router/create-oauth-middleware.ts: /.well-known/oauth-authorization-
  server, /oauth/jwks, /oauth/par (201), /oauth/token, /oauth/revoke (200 {} whatever became of
  the token or the client's authentication, RFC 7009); every answer of the last three carries
  Cache-Control no-store and a fresh DPoP-Nonce; credentials, then the request, then the DPoP
  proof are checked before the client is fetched;
- oauth/oauth-provider/src/metadata/build-metadata.ts and pds/src/context.ts: the metadata;
  pds/src/auth-routes.ts: /.well-known/oauth-protected-resource;
- oauth/oauth-provider/src/oauth-provider.ts: authenticateClient (DPoP required for DPoP-bound
  clients, a client assertion "jti" used once), pushedAuthorizationRequest (the proof's key binds
  the request), token (grant types), compareClientAuth, authorizationCodeGrant (a reused code
  revokes the grant made with it), validateCodeGrant (redirect_uri, PKCE S256, a code challenge
  used once a day), refreshTokenGrant (any failure after the refresh token was taken revokes
  the grant), validateRefreshGrant (session and refresh lifetimes), revoke;
- oauth/oauth-provider/src/request/request-manager.ts: the request's checks and lifetimes
  (PAR_EXPIRES_IN 5 min; AUTHORIZATION_INACTIVITY_TIMEOUT 5 min once the page is open and for
  the code), scopes the grammar does not read dropped, "atproto" required, PKCE S256 only,
  login_hint a handle or DID;
- oauth/oauth-provider/src/token/token-manager.ts: the token response, lifetimes (TOKEN_MAX_AGE
  60 min, never past the session), rotation (a new token id and refresh token each time, the
  used refresh token then replayed: the grant is revoked);
- oauth/oauth-provider/src/oauth-verifier.ts and pds/src/auth-verifier.ts (oauth()): the
  resource server's checks: the proof first (use_dpop_nonce, 401 with WWW-Authenticate), then
  the token (HS256 JWT, typ at+jwt, iss = the issuer, signed with the PDS's secret; cnf.jkt =
  the proof's key; "stateful" mode: the token must still be the grant's current one), audience
  the PDS's service DID, "atproto" in scope; every answer carries DPoP-Nonce; errors become
  XRPC errors named after the OAuth error;
- pds/src/pipethrough.ts, api/app/bsky/*, api/com/atproto/repo/*: the scope each call needs
  (scopes.py); router/assets/send-redirect.ts: 303 to the redirect_uri with iss, state and code
  (or error); pds/src/account-manager/oauth-store.ts: the grant's used refresh tokens.
The authorize page is the fake's own (oauth_page.py); docs/fakesky.md lists what is simpler.
"""

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
import time
import traceback
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit

from . import clients, dpop, jose, oauth_page, plc, scopes
from .oauth_errors import (
    OAuthError,
    ScopeMissing,
    UseDpopNonce,
    invalid_client,
    invalid_dpop_key_binding,
    invalid_dpop_proof,
    invalid_grant,
    invalid_request,
    invalid_scope,
    invalid_token,
)
from .repo import XrpcError
from .syntax import is_handle

REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
PAR_RESPONSE_ERRORS = (
    "invalid_request",
    "unauthorized_client",
    "unsupported_response_type",
    "invalid_scope",
    "server_error",
    "temporarily_unavailable",
)
CODE_CHALLENGE_REPLAY_S = 86400  # oauth-constants.ts CODE_CHALLENGE_REPLAY_TIMEFRAME
_REQUEST_ID = re.compile(r"^req-[0-9a-f]{32}$")
_VERIFIER = re.compile(r"^[a-zA-Z0-9._~-]{43,128}$")
_RESPONSE_MODES = ("query", "fragment", "form_post")
_PROMPTS = ("none", "login", "consent", "select_account", "create")
_COUNTS = (
    "pars",
    "authorize_pages",
    "sign_in_failures",
    "denials",
    "codes",
    "tokens",
    "refreshes",
    "revocations",
    "grants_revoked",
    "replays_refused",
    "use_dpop_nonce",
    "invalid_dpop_proof",
    "invalid_token",
    "scope_refusals",
    "oauth_calls",
)


@dataclass
class HttpRequest:
    method: str
    path: str
    query: dict  # name -> [values]
    headers: object  # email.message.Message: get(), get_all()
    body: bytes
    host: str


@dataclass
class HttpAnswer:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict = field(default_factory=dict)


def _json_answer(status, body, headers=None):
    return HttpAnswer(status, json.dumps(body).encode(), "application/json; charset=utf-8", headers)


def _html_answer(status, body, headers=None):
    return HttpAnswer(
        status, body, "text/html; charset=utf-8", {"Cache-Control": "no-store", **(headers or {})}
    )


@dataclass
class AuthRequest:
    """A pushed authorization request (request-store.ts RequestData)."""

    client_id: str
    client_auth: dict
    parameters: dict
    expires_at: float
    did: str | None = None
    code: str | None = None


@dataclass
class Grant:
    """One OAuth session: what token-store.ts keeps of a token, with its refresh tokens."""

    token_id: str
    client_id: str
    client_auth: dict
    did: str
    parameters: dict
    scope: str
    code: str
    created_at: float
    updated_at: float
    expires_at: float
    refresh_token: str | None
    confidential: bool
    expired_by_hook: bool = False
    used_refresh_tokens: list = field(default_factory=list)


def _hex_id(prefix, size):
    return prefix + secrets.token_hex(size)


class OAuth:
    """All OAuth state, kept under the fake's lock (client documents are fetched outside it)."""

    def __init__(self, fake, service_did):
        self.fake, self.service_did = fake, service_did
        self.clients = clients.ClientManager()
        self.nonces = dpop.Nonces()
        self.replays = dpop.ReplayStore()
        self.requests = {}  # request id -> AuthRequest
        self.request_by_code = {}  # code -> request id
        self.grants = {}  # token id -> Grant (the id changes at every refresh)
        self.grant_by_refresh = {}  # current or used refresh token -> Grant
        self.grant_by_code = {}  # the code a grant was made from -> Grant
        self.counts = dict.fromkeys(_COUNTS, 0)

    # -- origins -----------------------------------------------------------------------
    @property
    def config(self):
        return self.fake.config

    @property
    def issuer(self):
        """The fake's public origin: issuer, PDS and resource (no path, no trailing slash)."""
        parts = urlsplit(self.config.public_url or self.fake.own_url)
        return f"{parts.scheme.lower()}://{parts.netloc.lower()}"

    @property
    def authorize_url(self):
        return self.config.oauth_authorize_url or f"{self.issuer}/oauth/authorize"

    def summary(self):
        return {**self.counts, "grants_live": len(self.grants), "requests_open": len(self.requests)}

    def report(self):
        """GET /_fake/oauth: the counts and the settings the hook changes."""
        return {
            **self.summary(),
            "issuer": self.issuer,
            "authorize_url": self.authorize_url,
            "granular_scopes": self.config.oauth_granular_scopes,
        }

    def hook(self, body):
        """POST /_fake/oauth (under the lock); ValueError for an unknown key."""
        unknown = set(body) - {
            "authorize_url",
            "granular_scopes",
            "expire_access_tokens",
            "nonce_rotate",
        }
        if unknown:
            raise ValueError(f"unknown OAuth hook key {sorted(unknown)[0]}")
        settings = {}
        if "authorize_url" in body:
            settings["oauth_authorize_url"] = body["authorize_url"]
        if "granular_scopes" in body:
            settings["oauth_granular_scopes"] = body["granular_scopes"]
        self.config.update(settings)
        if body.get("expire_access_tokens"):
            for grant in self.grants.values():
                grant.expired_by_hook = True
        if body.get("nonce_rotate"):
            self.nonces.renew()

    def _forget_expired(self, now):
        """Requests nobody finished: gone once they expired (and their code with them)."""
        for request_id in [k for k, r in self.requests.items() if r.expires_at < now]:
            code = self.requests.pop(request_id).code
            self.request_by_code.pop(code, None)

    # -- HTTP routing ---------------------------------------------------------------------
    def http(self, request):
        """The answer to a request outside /xrpc/ and /_fake/, or None (404)."""
        path, method = request.path, request.method
        if path == "/.well-known/atproto-did" and method == "GET":
            return HttpAnswer(*_plain(plc.atproto_did(self.fake, request.host)))
        if method == "GET":
            found = plc.did_document(self.fake, path)
            if found:
                return HttpAnswer(*_plain(found))
        if path == "/.well-known/oauth-protected-resource" and method == "GET":
            return _json_answer(200, self.protected_resource_metadata(), _cors())
        if path == "/.well-known/oauth-authorization-server" and method == "GET":
            return _json_answer(
                200, self.server_metadata(), {**_cors(), "Cache-Control": "max-age=300"}
            )
        if path == "/oauth/jwks" and method == "GET":
            return _json_answer(200, {"keys": []}, {**_cors(), "Cache-Control": "max-age=300"})
        endpoints = {
            "/oauth/par": self.par,
            "/oauth/token": self.token,
            "/oauth/revoke": self.revoke,
        }
        if path in endpoints:
            if method != "POST":
                return HttpAnswer(405)
            return self._endpoint(request, endpoints[path], 201 if path == "/oauth/par" else 200)
        page_paths = {"/oauth/authorize", urlsplit(self.authorize_url).path or "/"}
        if path in page_paths and method in ("GET", "POST"):
            return self.authorize(request)
        return None

    def protected_resource_metadata(self):
        return {
            "resource": self.issuer,
            "authorization_servers": [self.issuer],
            "scopes_supported": [],
            "bearer_methods_supported": ["header"],
            "resource_documentation": "https://atproto.com",
        }

    def server_metadata(self):
        issuer = self.issuer
        return {
            "issuer": issuer,
            "scopes_supported": list(scopes.STATIC_SCOPES),
            "subject_types_supported": ["public"],
            "response_types_supported": ["code"],
            "response_modes_supported": list(_RESPONSE_MODES),
            "grant_types_supported": list(clients.SERVER_GRANT_TYPES),
            "code_challenge_methods_supported": ["S256"],
            "ui_locales_supported": ["en-US"],
            "display_values_supported": ["page", "popup", "touch"],
            "prompt_values_supported": list(_PROMPTS),
            "authorization_response_iss_parameter_supported": True,
            "request_object_signing_alg_values_supported": [*jose.VERIFY_ALGOS, "none"],
            "request_object_encryption_alg_values_supported": [],
            "request_object_encryption_enc_values_supported": [],
            "request_parameter_supported": True,
            "request_uri_parameter_supported": True,
            "require_request_uri_registration": True,
            "jwks_uri": f"{issuer}/oauth/jwks",
            "authorization_endpoint": self.authorize_url,
            "token_endpoint": f"{issuer}/oauth/token",
            "token_endpoint_auth_methods_supported": list(clients.AUTH_METHODS_SUPPORTED),
            "token_endpoint_auth_signing_alg_values_supported": list(jose.VERIFY_ALGOS),
            "revocation_endpoint": f"{issuer}/oauth/revoke",
            "pushed_authorization_request_endpoint": f"{issuer}/oauth/par",
            "require_pushed_authorization_requests": True,
            "dpop_signing_alg_values_supported": list(jose.VERIFY_ALGOS),
            "protected_resources": [issuer],
            "client_id_metadata_document_supported": True,
        }

    def _endpoint(self, request, handler, status):
        """create-oauth-middleware.ts oauthHandler: headers on every answer, errors as JSON."""
        with self.fake.lock:
            nonce = self.nonces.next(time.time(), self.config.oauth_dpop_nonce_rotation_s)
        headers = {
            **_cors(),
            "Cache-Control": "no-store",
            "Pragma": "no-cache",
            "DPoP-Nonce": nonce,
            "Access-Control-Expose-Headers": "DPoP-Nonce",
        }
        try:
            body = handler(request)
        except OAuthError as error:
            with self.fake.lock:
                self._count_error(error)
            challenge = error.www_authenticate()
            if challenge:
                headers["WWW-Authenticate"] = challenge
                headers["Access-Control-Expose-Headers"] = "DPoP-Nonce, WWW-Authenticate"
            return _json_answer(error.status, error.body(), headers)
        except Exception:
            traceback.print_exc()  # a fault of the fake's: in the journal, not to the client
            error = {"error": "server_error", "error_description": "Server error"}
            return _json_answer(500, error, headers)
        return _json_answer(status, body, headers)

    def _count_error(self, error):
        if error.error in ("use_dpop_nonce", "invalid_dpop_proof", "invalid_token"):
            self.counts[error.error] += 1

    # -- what every endpoint reads ---------------------------------------------------------
    def _payload(self, request):
        """parseHttpRequest(req, ['json', 'urlencoded'])."""
        mime = (request.headers.get("Content-Type") or "application/octet-stream").split(";")[0]
        mime = mime.strip().lower()
        if re.match(r"^application/(?:.+\+)?json$", mime):
            try:
                return json.loads(request.body or b"null")
            except ValueError:
                raise OAuthError("invalid_request", "Invalid JSON") from None
        if mime == "application/x-www-form-urlencoded":
            try:
                return dict(parse_qsl(request.body.decode(), keep_blank_values=True))
            except UnicodeDecodeError:
                raise OAuthError("invalid_request", "Invalid URL-encoded data") from None
        raise OAuthError("invalid_request", f"Unsupported content-type: {mime}", 415)

    def _credentials(self, payload, error):
        """oauth-client-credentials.ts: the jwt-bearer form, or just the client_id."""
        if not isinstance(payload, dict):
            raise error("Client credentials missing")
        client_id = payload.get("client_id")
        if not isinstance(client_id, str) or not client_id:
            raise error("Client credentials missing")
        assertion = payload.get("client_assertion")
        if (
            payload.get("client_assertion_type") == clients.CLIENT_ASSERTION_TYPE
            and isinstance(assertion, str)
            and assertion.count(".") == 2
        ):
            return {"client_id": client_id, "client_assertion": assertion}
        return {"client_id": client_id}

    def _check_dpop(self, proofs, method, path, access_token, now):
        """oauth-verifier.ts checkDpopProof: the proof (or None), its "jti" used once. The URL
        it must name is the fake's public origin and the path it was asked."""
        url = dpop.normalized_url(self.issuer + path)
        proof = dpop.check_proof(proofs, method, url, access_token, self.nonces, self.config, now)
        if proof and not self.replays.unique(
            "DPoP", proof.jti, dpop.replay_ttl_s(self.config), now
        ):
            self.counts["replays_refused"] += 1
            raise invalid_dpop_proof("DPoP proof replayed")
        return proof

    def _client(self, client_id):
        return self.clients.get(client_id, self.config)  # network: never under the lock

    def _authenticate_client(self, client, credentials, proof, now, allow_missing_proof=False):
        """oauth-provider.ts authenticateClient (under the lock)."""
        bound = client.metadata.get("dpop_bound_access_tokens")
        if bound and not proof and not allow_missing_proof:
            raise invalid_dpop_proof("DPoP proof required")
        if proof and not bound:
            raise invalid_dpop_proof("DPoP proof not allowed for this client")
        auth = client.authenticate(credentials, self.issuer, self.config, now)
        if auth["method"] == "private_key_jwt":
            ttl = auth["exp"] - now if isinstance(auth.get("exp"), int | float) else 66
            if not self.replays.unique(f"Auth@{client.id}", auth["jti"], ttl, now):
                self.counts["replays_refused"] += 1
                raise invalid_grant("private_key_jwt jti reused")
        return auth

    # -- PAR ---------------------------------------------------------------------------------
    def par(self, request):
        payload = self._payload(request)
        credentials = self._credentials(payload, invalid_client)
        parameters = self._authorization_parameters(payload)
        now = time.time()
        with self.fake.lock:
            proof = self._check_dpop(*_proof_of(request), None, now)
        client = self._client(credentials["client_id"])
        with self.fake.lock:
            now = time.time()
            auth = self._authenticate_client(client, credentials, proof, now, True)
            if not parameters.get("dpop_jkt"):
                if proof:
                    parameters["dpop_jkt"] = proof.jkt
            elif proof and proof.jkt != parameters["dpop_jkt"]:
                raise invalid_dpop_key_binding()
            try:
                parameters = self._validate_request(client, parameters)
            except OAuthError as error:
                if error.error not in PAR_RESPONSE_ERRORS:
                    raise invalid_request(error.description) from None
                raise
            self._forget_expired(now)
            request_id = _hex_id("req-", 16)
            expires_at = now + self.config.oauth_par_ttl_s
            self.requests[request_id] = AuthRequest(
                client_id=client.id, client_auth=auth, parameters=parameters, expires_at=expires_at
            )
            self.counts["pars"] += 1
        return {
            "request_uri": REQUEST_URI_PREFIX + request_id,
            "expires_in": math.floor(expires_at - time.time()),
        }

    def _authorization_parameters(self, payload):
        """oauth-authorization-request-parameters.ts, the fields the fake reads."""
        if not isinstance(payload, dict):
            raise invalid_request("Invalid authorization request")
        if "request" in payload and "response_type" not in payload:
            raise invalid_request("Invalid authorization request: JAR is not supported by fakesky")

        def problem(name, message):
            return invalid_request(f"Invalid authorization request: {message} at body.{name}")

        params = {}
        for name in (
            "client_id",
            "state",
            "redirect_uri",
            "scope",
            "response_type",
            "code_challenge",
            "code_challenge_method",
            "dpop_jkt",
            "response_mode",
            "nonce",
            "login_hint",
            "prompt",
            "claims",
            "id_token_hint",
        ):
            value = payload.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise problem(name, "Expected string")
            params[name] = value
        if not params.get("client_id"):
            raise problem("client_id", "Required")
        if params.get("response_type") not in clients.RESPONSE_TYPES:
            raise problem("response_type", "Invalid enum value")
        lenient = self.config.oauth_allow_loopback_clients
        if "redirect_uri" in params:
            found = clients.redirect_uri_problem(params["redirect_uri"], lenient)
            if found:
                raise problem("redirect_uri", found)
        if "scope" in params and not clients._scope_syntax(params["scope"]):
            raise problem("scope", "Invalid OAuth scope")
        if params.get("code_challenge_method", "S256") not in ("S256", "plain"):
            raise problem("code_challenge_method", "Invalid enum value")
        if params.get("response_mode", "query") not in _RESPONSE_MODES:
            raise problem("response_mode", "Invalid enum value")
        if params.get("prompt", "none") not in _PROMPTS:
            raise problem("prompt", "Invalid enum value")
        if params.get("login_hint") == "":
            raise problem("login_hint", "String must contain at least 1 character(s)")
        return params

    def _validate_request(self, client, parameters):
        """request-manager.ts validate()."""
        for name in ("claims", "id_token_hint", "nonce"):
            if parameters.get(name) is not None:
                raise invalid_request(f'Unsupported "{name}" parameter')
        if parameters["response_type"] != "code":
            raise OAuthError(
                "unsupported_response_type",
                f'Unsupported response_type "{parameters["response_type"]}"',
            )
        parameters = client.validate_request(parameters)
        requested = list(dict.fromkeys((parameters.get("scope") or "").split(" ")))
        requested = [s for s in requested if s]
        kept = [s for s in requested if scopes.is_atproto_scope(s)]
        parameters["scope"] = " ".join(kept) or None
        if parameters.get("code_challenge"):
            parameters.setdefault("code_challenge_method", "plain")
        elif parameters.get("code_challenge_method"):
            raise invalid_request(
                "code_challenge is required when code_challenge_method is provided"
            )
        else:
            raise invalid_request("Use of PKCE is required")
        if "atproto" not in requested:
            raise invalid_scope('The "atproto" scope is required')
        if "openid" in requested:
            raise invalid_scope("OpenID Connect is not compatible with atproto")
        if parameters["code_challenge_method"] != "S256":
            raise invalid_request('atproto requires use of "S256" code_challenge_method')
        if not client.confidential:
            if parameters.get("prompt") == "none":
                raise OAuthError(
                    "consent_required", "Public clients are not allowed to use silent-sign-on"
                )
            if parameters.get("prompt") != "create":
                parameters["prompt"] = "consent"
        hint = (parameters.get("login_hint") or "").lower()
        if hint:
            if not (scopes.is_atproto_did(hint) or is_handle(hint)):
                raise invalid_request(f'Invalid login_hint "{hint}"')
            parameters["login_hint"] = hint
        for scope in kept:
            if not self.config.oauth_granular_scopes and scopes.is_granular(scope):
                # The fake's setting: a PDS older than granular scopes.
                raise invalid_scope(f'Scope "{scope}" is not supported by this server')
            include = scopes.parse(scope, "include")
            if include:
                # lexicon-manager.ts: the fake resolves no permission set (no network).
                raise invalid_scope(f"Could not resolve Lexicon for NSID ({include['nsid']})")
        return parameters

    # -- the authorize page ------------------------------------------------------------------
    def authorize(self, request):
        form = {}
        if request.method == "POST":
            try:
                form = dict(parse_qsl(request.body.decode(), keep_blank_values=True))
            except UnicodeDecodeError:
                form = {}
        query = {k: v[-1] for k, v in request.query.items()}
        fields = {**query, **form}
        try:
            client = self._client(fields.get("client_id", ""))
        except OAuthError as error:
            return _html_answer(400, oauth_page.error_page(error.error, error.description))
        started = time.perf_counter()
        with self.fake.lock:
            found = self._open_request(client, fields.get("request_uri", ""), time.time())
            if isinstance(found, HttpAnswer):
                return found
            request_id, auth_request = found
            if request.method == "GET":
                self.counts["authorize_pages"] += 1
                return self._page(client, request_id, auth_request, fields, None)
            if fields.get("decision") == "deny":
                self.counts["denials"] += 1
                del self.requests[request_id]
                return self._redirect(
                    auth_request.parameters,
                    [
                        ("error", "access_denied"),
                        ("error_description", "The user rejected the request"),
                    ],
                )
            answer = self._sign_in(client, request_id, auth_request, fields)
        # account-manager.ts login(): a sign-in takes at least login_min_ms.
        time.sleep(max(0.0, self.config.login_min_ms / 1000 - (time.perf_counter() - started)))
        return answer

    def _open_request(self, client, request_uri, now):
        """request-manager.ts get(): the request, or the answer that ends it."""
        request_id = request_uri[len(REQUEST_URI_PREFIX) :]
        if not request_uri.startswith(REQUEST_URI_PREFIX) or not _REQUEST_ID.match(request_id):
            error = invalid_request('Invalid "request_uri" query parameter')
            return _html_answer(400, oauth_page.error_page(error.error, error.description))
        auth_request = self.requests.get(request_id)
        if auth_request is None:
            return _html_answer(
                400, oauth_page.error_page("invalid_request", "Unknown request_uri")
            )
        problem = None
        if auth_request.did or auth_request.code:
            problem = "This request was already authorized"
        elif auth_request.expires_at < now:
            problem = "This request has expired"
        elif auth_request.client_id != client.id:
            problem = "This request was initiated for another client"
        if problem:
            del self.requests[request_id]
            return self._redirect(
                auth_request.parameters,
                [("error", "access_denied"), ("error_description", problem)],
            )
        auth_request.expires_at = now + self.config.oauth_authorization_inactivity_s
        return request_id, auth_request

    def _page(self, client, request_id, auth_request, fields, error, status=200):
        hint = fields.get("username") or auth_request.parameters.get("login_hint") or ""
        account = self.fake.by_did.get(hint)
        return _html_answer(
            status,
            oauth_page.authorize_page(
                client_host=urlsplit(client.id).netloc,
                client_name=client.metadata.get("client_name"),
                scope=auth_request.parameters.get("scope"),
                client_id=client.id,
                request_uri=REQUEST_URI_PREFIX + request_id,
                username=account.handle if account else hint,
                error=error,
            ),
        )

    def _sign_in(self, client, request_id, auth_request, fields):
        identifier = (fields.get("username") or "").strip().lower()
        password = fields.get("password") or ""
        account = self.fake.accounts.get(identifier) or self.fake.by_did.get(identifier)
        if (
            account is None
            or account.password_revoked
            or not secrets.compare_digest(password.encode(), account.password.encode())
        ):
            self.counts["sign_in_failures"] += 1
            return self._page(
                client, request_id, auth_request, fields, "Invalid identifier or password", 400
            )
        if account.status == "takendown":
            self.counts["sign_in_failures"] += 1
            return self._page(
                client, request_id, auth_request, fields, "Account was taken down", 400
            )
        if account.status == "deactivated":
            del self.requests[request_id]
            return self._redirect(
                auth_request.parameters,
                [
                    ("error", "access_denied"),
                    ("error_description", "This account has been deactivated"),
                ],
            )
        code = _hex_id("cod-", 32)
        auth_request.did, auth_request.code = account.did, code
        auth_request.expires_at = time.time() + self.config.oauth_authorization_inactivity_s
        self.request_by_code[code] = request_id
        self.counts["codes"] += 1
        return self._redirect(auth_request.parameters, [("code", code)])

    def _redirect(self, parameters, result):
        """send-redirect.ts: iss, state, then the result; 303 for query and fragment."""
        params = [("iss", self.issuer)]
        if parameters.get("state") is not None:
            params.append(("state", parameters["state"]))
        params.extend(result)
        uri = parameters["redirect_uri"]
        mode = parameters.get("response_mode") or "query"
        if mode == "form_post":
            return _html_answer(200, oauth_page.form_post_page(uri, params))
        parts = urlsplit(uri)
        if mode == "fragment":
            location = parts._replace(fragment=urlencode(params)).geturl()
        else:
            query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
            query = [(k, v) for k, v in query if k not in dict(params)] + params
            location = parts._replace(query=urlencode(query)).geturl()
        return HttpAnswer(303, headers={"Location": location, "Cache-Control": "no-store"})

    # -- the token endpoint -------------------------------------------------------------------
    def token(self, request):
        payload = self._payload(request)
        credentials = self._credentials(payload, invalid_grant)
        token_request = self._token_request(payload)
        with self.fake.lock:
            proof = self._check_dpop(*_proof_of(request), None, time.time())
        client = self._client(credentials["client_id"])
        with self.fake.lock:
            now = time.time()
            auth = self._authenticate_client(client, credentials, proof, now)
            grant_type = token_request["grant_type"]
            if grant_type not in clients.SERVER_GRANT_TYPES:
                raise invalid_grant(f'Grant type "{grant_type}" is not supported by the server')
            if grant_type not in client.metadata["grant_types"]:
                raise invalid_grant(f'"{grant_type}" grant type is not allowed for this client')
            if grant_type == "authorization_code":
                return self._code_grant(client, auth, token_request, proof, now)
            return self._refresh_grant(client, auth, token_request, proof, now)

    def _token_request(self, payload):
        """oauth-token-request.ts: a discriminated union on grant_type."""
        bad = invalid_grant("Invalid request payload")
        if not isinstance(payload, dict):
            raise bad
        grant_type = payload.get("grant_type")
        if grant_type == "authorization_code":
            code, redirect_uri = payload.get("code"), payload.get("redirect_uri")
            verifier = payload.get("code_verifier")
            lenient = self.config.oauth_allow_loopback_clients
            if (
                not isinstance(code, str)
                or not code
                or clients.redirect_uri_problem(redirect_uri, lenient)
                or (
                    verifier is not None
                    and not (isinstance(verifier, str) and _VERIFIER.match(verifier))
                )
            ):
                raise bad
            return {
                "grant_type": grant_type,
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            }
        if grant_type == "refresh_token":
            token = payload.get("refresh_token")
            if not isinstance(token, str) or not token.startswith("ref-") or len(token) != 68:
                raise bad
            return {"grant_type": grant_type, "refresh_token": token}
        if grant_type in ("password", "client_credentials"):
            return {"grant_type": grant_type}
        raise bad

    def _compare_client_auth(self, client, auth, proof, client_id, parameters, initial):
        """oauth-provider.ts compareClientAuth."""
        method = client.metadata["token_endpoint_auth_method"]
        if auth["method"] != method:
            raise invalid_grant(
                f"Client authentication method mismatch (expected {method}, got {auth['method']})"
            )
        if client_id != client.id:
            raise invalid_grant("Token was not issued to this client")
        if parameters.get("dpop_jkt"):
            if not proof:
                raise invalid_grant("DPoP proof is required for this request")
            if parameters["dpop_jkt"] != proof.jkt:
                raise invalid_grant("DPoP proof does not match the expected JKT")
        if initial and initial["method"] == "private_key_jwt":
            if auth["method"] != "private_key_jwt":
                raise invalid_grant(
                    "Client authentication method mismatch (expected private_key_jwt)"
                )
            if any(auth[k] != initial[k] for k in ("kid", "alg", "jkt")):
                raise invalid_grant(
                    "The session was initiated with a different key than the client assertion"
                    " currently used"
                )

    def _code_grant(self, client, auth, token_request, proof, now):
        code = token_request["code"]
        if not code.startswith("cod-") or len(code) != 68:
            raise invalid_grant("Invalid code")
        request_id = self.request_by_code.pop(code, None)
        auth_request = self.requests.pop(request_id, None) if request_id else None
        if auth_request is None:
            grant = self.grant_by_code.get(code)
            if grant is not None:
                # The code was used before: the grant made with it goes.
                self.counts["replays_refused"] += 1
                self._delete_grant(grant)
            raise invalid_grant("Invalid code")
        if auth_request.expires_at < now:
            raise invalid_grant("This code has expired")
        self._compare_client_auth(
            client,
            auth,
            proof,
            auth_request.client_id,
            auth_request.parameters,
            auth_request.client_auth,
        )
        parameters = dict(auth_request.parameters)
        if proof and not parameters.get("dpop_jkt"):
            parameters["dpop_jkt"] = proof.jkt
        self._validate_code_grant(parameters, token_request, now)
        account = self.fake.by_did.get(auth_request.did)
        if account is None:
            raise invalid_grant("Account not found")
        if not parameters.get("dpop_jkt"):
            raise invalid_grant("DPoP JKT is required for DPoP bound access tokens")
        token_id = _hex_id("tok-", 16)
        refresh = _hex_id("ref-", 32) if "refresh_token" in client.metadata["grant_types"] else None
        grant = Grant(
            token_id=token_id,
            client_id=client.id,
            client_auth=auth,
            did=account.did,
            parameters=parameters,
            scope=parameters.get("scope") or "",
            code=code,
            created_at=now,
            updated_at=now,
            expires_at=self._token_expiry(client, now, now),
            refresh_token=refresh,
            confidential=client.confidential,
        )
        self.grants[token_id] = grant
        self.grant_by_code[code] = grant
        if refresh:
            self.grant_by_refresh[refresh] = grant
        self.counts["tokens"] += 1
        return self._token_response(grant, now)

    def _validate_code_grant(self, parameters, token_request, now):
        if parameters.get("redirect_uri") != token_request["redirect_uri"]:
            raise invalid_grant(
                "The redirect_uri parameter must match the one used in the authorization request"
            )
        verifier = token_request.get("code_verifier")
        challenge = parameters["code_challenge"]
        if not verifier:
            raise invalid_grant("code_verifier is required")
        if len(verifier) < 43:
            raise invalid_grant("code_verifier too short")
        computed = hashlib.sha256(verifier.encode()).digest()
        if not hmac.compare_digest(_base64_bytes(challenge), computed):
            raise invalid_grant("Invalid code_verifier")
        ttl = math.ceil(CODE_CHALLENGE_REPLAY_S * dpop.SECURITY_RATIO)
        if not self.replays.unique("CodeChallenge", challenge, ttl, now):
            self.counts["replays_refused"] += 1
            raise invalid_grant("Code challenge already used")

    def _refresh_grant(self, client, auth, token_request, proof, now):
        token = token_request["refresh_token"]
        grant = self.grant_by_refresh.get(token)
        if grant is None:
            raise invalid_grant("Invalid refresh token")
        if grant.refresh_token != token:
            # token-manager.ts consumeRefreshToken: an old refresh token comes back.
            self.counts["replays_refused"] += 1
            self._delete_grant(grant)
            raise invalid_grant("Refresh token replayed")
        try:
            self._compare_client_auth(
                client, auth, proof, grant.client_id, grant.parameters, grant.client_auth
            )
            if "refresh_token" not in client.metadata["grant_types"]:
                raise invalid_grant("Refresh token grant not allowed")
            if now - grant.created_at > client.session_lifetime_s(self.config):
                raise invalid_grant("Session expired")
            if now - grant.updated_at > client.refresh_lifetime_s(self.config):
                raise invalid_grant("Refresh token expired")
            expires_at = self._token_expiry(client, now, grant.created_at)
        except OAuthError:
            self._delete_grant(grant)
            raise
        del self.grants[grant.token_id]
        grant.used_refresh_tokens.append(token)
        grant.token_id, grant.refresh_token = _hex_id("tok-", 16), _hex_id("ref-", 32)
        grant.updated_at, grant.expires_at, grant.client_auth = now, expires_at, auth
        grant.expired_by_hook = False
        self.grants[grant.token_id] = grant
        self.grant_by_refresh[grant.refresh_token] = grant
        self.counts["refreshes"] += 1
        return self._token_response(grant, now)

    def _token_expiry(self, client, now, session_created):
        lifetime = min(
            self.config.oauth_access_token_ttl_s,
            session_created + client.session_lifetime_s(self.config) - now,
        )
        if lifetime <= 0.25:
            raise invalid_grant("Session expired")
        return now + lifetime

    def _token_response(self, grant, now):
        claims = {
            "jti": grant.token_id,
            "sub": grant.did,
            "iat": math.floor(now),
            "exp": math.floor(grant.expires_at),
            "aud": self.service_did,
            "cnf": {"jkt": grant.parameters["dpop_jkt"]},
            "client_id": grant.client_id,
            "iss": self.issuer,
        }
        body = {
            "access_token": jose.sign_hs256(self.fake.secret, "at+jwt", claims),
            "token_type": "DPoP",
            "refresh_token": grant.refresh_token,
            "scope": grant.scope,
            "expires_in": math.floor(grant.expires_at - time.time()),
            "sub": grant.did,
        }
        if body["refresh_token"] is None:
            del body["refresh_token"]
        return body

    def _delete_grant(self, grant):
        if self.grants.pop(grant.token_id, None) is None:
            return
        self.counts["grants_revoked"] += 1
        for token in [grant.refresh_token, *grant.used_refresh_tokens]:
            self.grant_by_refresh.pop(token, None)
        self.grant_by_code.pop(grant.code, None)

    # -- revocation -----------------------------------------------------------------------------
    def revoke(self, request):
        payload = self._payload(request)
        credentials = self._credentials(payload, invalid_request)
        token = payload.get("token")
        hint = payload.get("token_type_hint")
        if (
            not isinstance(token, str)
            or not (_is_signed_jwt(token) or (token.startswith("ref-") and len(token) == 68))
            or hint not in (None, "access_token", "refresh_token")
        ):
            raise invalid_request("Invalid request payload")
        with self.fake.lock:
            proof = self._check_dpop(*_proof_of(request), None, time.time())
        try:
            client = self._client(credentials["client_id"])
            with self.fake.lock:
                now = time.time()
                auth = self._authenticate_client(client, credentials, proof, now)
                grant = self._find_grant(token)
                if grant is not None:
                    self._compare_client_auth(
                        client, auth, proof, grant.client_id, grant.parameters, grant.client_auth
                    )
                    self._delete_grant(grant)
                    self.counts["revocations"] += 1
        except OAuthError:
            pass  # RFC 7009 2.2: the client cannot do anything useful with an error here
        return {}

    def _find_grant(self, token):
        """token-manager.ts findToken."""
        if token.startswith("ref-"):
            return self.grant_by_refresh.get(token)
        try:
            header, claims = jose.verify(token, jose.hs256_key(self.fake.secret), ("HS256",))
            jose.check_claims(
                header, claims, typ="at+jwt", issuer=self.issuer, clock_tolerance=math.inf
            )
        except jose.JoseError:
            return None
        return self.grants.get(claims.get("jti"))

    # -- the resource server (XRPC) --------------------------------------------------------------
    def authenticate_xrpc(self, call):
        """auth-verifier.ts oauth(): the account's DID and the token's scope, or raise an
        XrpcError (its WWW-Authenticate in call.headers). Runs under the fake's lock."""
        request, now = call.request, call.now
        call.headers["DPoP-Nonce"] = self.nonces.next(now, self.config.oauth_dpop_nonce_rotation_s)
        self.counts["oauth_calls"] += 1
        try:
            try:
                proof = self._check_dpop(
                    request.dpop, request.method, request.path, request.token, now
                )
                grant = self._decode_access_token(request.token, proof, now)
            except UseDpopNonce as error:
                raise error.at_resource_server() from None
            except OAuthError as error:
                if error.challenge:
                    raise
                raise invalid_token(error.description) from None
        except OAuthError as error:
            self._count_error(error)
            challenge = error.www_authenticate()
            if challenge:
                call.headers["WWW-Authenticate"] = challenge
            raise XrpcError(error.status, error.error, error.description) from None
        return grant.did, scopes.Permissions(grant.scope)

    def _decode_access_token(self, token, proof, now):
        """oauth-verifier.ts decodeToken + oauth-provider.ts (stateful) + verifyTokenPayload."""
        if not _is_signed_jwt(token or ""):
            raise invalid_token("Malformed token")
        try:
            header, claims = jose.verify(token, jose.hs256_key(self.fake.secret), ("HS256",))
            jose.check_claims(header, claims, typ="at+jwt", issuer=self.issuer, now=now)
        except jose.JoseError as error:
            raise invalid_token(error.message) from None
        jti, jkt = claims.get("jti"), (claims.get("cnf") or {}).get("jkt")
        if not isinstance(jti, str) or not isinstance(claims.get("sub"), str):
            raise invalid_token("Invalid token")
        if not jkt:
            raise invalid_token("Bearer token type must be used without a DPoP proof", "Bearer")
        if not proof:
            raise invalid_dpop_proof("DPoP proof required")
        if jkt != proof.jkt:
            raise invalid_dpop_key_binding()
        grant = self.grants.get(jti)
        if grant is None:
            raise invalid_token("Invalid token")
        if grant.parameters.get("dpop_jkt") != jkt:
            self._delete_grant(grant)
            raise invalid_token("Invalid token")
        if grant.expired_by_hook:
            raise invalid_token('"exp" claim timestamp check failed')
        if grant.expires_at < now:
            self._delete_grant(grant)
            raise invalid_token("Token expired")
        if claims.get("aud") != self.service_did:
            raise invalid_token(
                f"Invalid audience (got: {claims.get('aud')}, expected one of: {self.service_did})"
            )
        if "atproto" not in grant.scope.split(" "):
            raise invalid_token(f"Invalid scope (got: {grant.scope}, expected one of: atproto)")
        return grant

    def check_scope(self, call, kind, *args):
        """ScopePermissions.assertRepo / assertRpc for a call made with an OAuth token (403
        ScopeMissingError); nothing for an app password's session."""
        permissions = call.permissions
        if permissions is None:
            return
        try:
            if kind == "repo":
                permissions.assert_repo(*args)
            else:
                permissions.assert_rpc(*args)
        except ScopeMissing as error:
            self.counts["scope_refusals"] += 1
            raise XrpcError(error.status, error.error, error.message) from None


def is_dpop_bound(token):
    """Whether a token (checked elsewhere) carries a "cnf" claim: one of OAuth's."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return False
    return isinstance(claims, dict) and "cnf" in claims


def _proof_of(request):
    return request.headers.get_all("DPoP") or [], request.method, request.path


def _plain(found):
    status, content_type, body = found
    return status, body, content_type, {"Access-Control-Allow-Origin": "*"}


def _cors():
    return {"Access-Control-Allow-Origin": "*"}


def _is_signed_jwt(value):
    parts = value.split(".")
    return len(parts) == 3 and all(re.match(r"^[A-Za-z0-9_-]+$", part) for part in parts)


def _base64_bytes(text):
    """Node's Buffer.from(text, 'base64'): either alphabet, padding optional."""
    cleaned = text.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except ValueError:
        return b""
