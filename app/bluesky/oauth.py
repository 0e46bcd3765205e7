"""Sign in with Bluesky: an atproto OAuth confidential web client.

As atproto.com/specs/oauth specifies it and the reference client builds it
(bluesky-social/atproto packages/oauth/oauth-client): the person's handle or DID names their
PDS (handle -> DID -> DID document -> #atproto_pds), the PDS names its authorization server
(/.well-known/oauth-protected-resource), whose metadata
(/.well-known/oauth-authorization-server) must say it takes pushed authorization requests,
PKCE S256, DPoP and private_key_jwt. The app then pushes the request (PAR) with a client
assertion signed by its ES256 key, sends the browser to the authorize page, and trades the
code for DPoP-bound tokens with the same proof key. Refresh tokens rotate: every refresh
returns a new one and the old one is dead (a replayed one ends the whole grant, as the
reference provider does), so refreshes of one grant must be serialised by the caller
(blocking.network does, under a row lock).

JOSE (the DPoP proofs and the client assertion) is joserfc's; hashes are hashlib's. No
password is ever seen: what is kept is the Grant (tokens, the DPoP key, where they go),
encrypted at rest by the caller.
"""

import base64
import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx
from joserfc import jwk, jwt

from .errors import CredentialsRevoked, NotFound, ProviderError, ServerError
from .tls import tls_context

# What the app asks for, the narrowest the granular scopes allow (the reference's
# packages/oauth/oauth-scopes): create and delete its own block records, and call the
# AppView methods it reads and mutes with, each named, at the AppView only.
BLOCK_SCOPE = "repo:app.bsky.graph.block?action=create&action=delete"
APPVIEW_METHODS = (
    "app.bsky.actor.getProfile",
    "app.bsky.actor.getProfiles",
    "app.bsky.feed.getLikes",
    "app.bsky.feed.getPostThread",
    "app.bsky.feed.getPosts",
    "app.bsky.feed.getQuotes",
    "app.bsky.feed.getRepostedBy",
    "app.bsky.graph.getBlocks",
    "app.bsky.graph.getFollowers",
    "app.bsky.graph.muteActor",
    "app.bsky.graph.unmuteActor",
)
# For a PDS that does not know the granular scopes: what an app password allows.
FALLBACK_SCOPE = "atproto transition:generic"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Refresh a little before the access token runs out rather than spend a refused call.
EXPIRY_MARGIN_S = 60
# The server nonce of each origin (scheme://host:port), shared by every client in the
# process: a worker's first call to a PDS pays the use_dpop_nonce round trip, later ones not.
_NONCES: dict[str, str] = {}


def granular_scope(appview_audience: str) -> str:
    """The scopes the app asks for; appview_audience is the AppView's service reference,
    e.g. did:web:api.bsky.app#bsky_appview (its # written %23 inside a scope)."""
    aud = quote(appview_audience, safe=":")
    rpcs = [f"rpc:{method}?aud={aud}" for method in APPVIEW_METHODS]
    return " ".join(["atproto", BLOCK_SCOPE, *rpcs])


class OAuthError(ProviderError):
    """The authorization server or the person refused, or an answer broke the protocol."""


class GrantRevoked(CredentialsRevoked):
    """The grant is gone (revoked at the PDS, expired, or its refresh token refused)."""

    reason = (
        "Bluesky ended Shoestring's access to your account (it was revoked or expired):"
        " sign in with Bluesky again to go on."
    )
    link_message = reason


def _expires_at(token_response: dict) -> float | None:
    try:
        return time.time() + float(token_response["expires_in"])
    except (KeyError, TypeError, ValueError):
        return None


def _b64url_sha256(text: str) -> str:
    digest = hashlib.sha256(text.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _json_object(url: str, response: httpx.Response) -> dict:
    try:
        data = response.json()
    except ValueError as error:
        raise OAuthError(f"{url}: the answer is not JSON") from error
    if not isinstance(data, dict):
        raise OAuthError(f"{url}: the answer is not a JSON object")
    return data


class HttpClient:
    """Something holding an httpx client (self._http), closed by a with block."""

    def close(self):
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", ""))
    except (ValueError, AttributeError):
        return ""


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        detail = body.get("error_description") or body.get("message") or ""
        return f"{body.get('error', response.status_code)}: {detail}".rstrip(": ")
    except (ValueError, AttributeError):
        return f"HTTP {response.status_code}"


def nonce_challenge(response: httpx.Response) -> bool:
    """Whether the server asks for (another) DPoP nonce: 400 use_dpop_nonce at an
    authorization server, 401 with WWW-Authenticate: DPoP error="use_dpop_nonce" at a PDS."""
    if response.status_code == 401:
        return 'error="use_dpop_nonce"' in response.headers.get("www-authenticate", "")
    return response.status_code == 400 and _error_code(response) == "use_dpop_nonce"


def remember_nonce(url: str, response: httpx.Response) -> None:
    nonce = response.headers.get("dpop-nonce")
    if nonce:
        _NONCES[_origin(url)] = nonce


def dpop_proof(key: jwk.ECKey, method: str, url: str, access_token: str | None = None) -> str:
    """A DPoP proof (RFC 9449) for one request, with the origin's current nonce if known."""
    parts = urlsplit(url)
    claims = {
        "jti": secrets.token_urlsafe(18),
        "htm": method,
        "htu": urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
        "iat": int(time.time()),
    }
    nonce = _NONCES.get(_origin(url))
    if nonce:
        claims["nonce"] = nonce
    if access_token:
        claims["ath"] = _b64url_sha256(access_token)
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    return jwt.encode(header, claims, key)


@dataclass
class Grant:
    """What one person's sign-in with Bluesky gave the app: kept encrypted, as JSON."""

    did: str
    handle: str
    pds_url: str
    issuer: str
    token_endpoint: str
    revocation_endpoint: str
    client_id: str
    scope: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    # None: the server named no lifetime (the token is used until it is refused).
    expires_at: float | None
    dpop_key: dict = field(repr=False)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Grant":
        return cls(**json.loads(text))

    @property
    def key(self) -> jwk.ECKey:
        return jwk.ECKey.import_key(self.dpop_key)

    @property
    def granular(self) -> bool:
        return "transition:generic" not in self.scope.split()


@dataclass(frozen=True)
class Identity:
    did: str
    handle: str
    pds_url: str


class OAuthClient(HttpClient):
    """One confidential client (its client_id URL and ES256 key) talking to any PDS.

    resolve_handle(handle) -> DID is given by the caller (blocking.network: the entryway's
    resolveHandle); did:plc documents are read from plc_url; check_url(url) returns the URL
    if tokens may go there and raises otherwise (bluesky.client.check_pds_url).
    """

    def __init__(
        self,
        client_id: str,
        client_key: jwk.ECKey,
        resolve_handle: Callable[[str], str],
        plc_url: str,
        check_url: Callable[[str], str],
        redirect_uri: str = "",
        timeout: float = 20.0,
        transport: httpx.BaseTransport | None = None,
    ):
        if not client_key.kid:
            raise ValueError("the client key needs a kid (its JWKS names it)")
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self.client_key = client_key
        self._resolve_handle = resolve_handle
        self._plc_url = plc_url.rstrip("/")
        self._check_url = check_url
        self._http = httpx.Client(
            timeout=timeout,
            transport=transport,
            verify=tls_context(),
            follow_redirects=False,
            headers={"User-Agent": "shoestring/1"},
        )

    # -- discovery --------------------------------------------------------
    def identity(self, handle_or_did: str, handle_back: bool = True) -> Identity:
        """DID, handle and PDS of an account; the handle only if the DID document claims it
        (at://<handle> in alsoKnownAs) and, from a DID, it resolves back to the DID
        (handle_back=False: the DID stands for it, one request fewer)."""
        from .client import normalize_handle, pds_from_did_doc

        actor = normalize_handle(handle_or_did)
        did = actor if actor.startswith("did:") else self._resolve_handle(actor)
        document = self._did_document(did)
        if not isinstance(document, dict) or document.get("id") != did:
            raise OAuthError(f"{did}: the DID document does not describe this DID")
        claimed = [
            aka[len("at://") :].lower()
            for aka in document.get("alsoKnownAs") or []
            if isinstance(aka, str) and aka.startswith("at://")
        ]
        if not actor.startswith("did:") and actor not in claimed:
            raise OAuthError(f"{actor}: its DID document does not confirm the handle")
        pds = pds_from_did_doc(document)
        if not pds:
            raise OAuthError(f"{did}: the DID document names no PDS")
        if not actor.startswith("did:"):
            handle = actor
        elif not handle_back:
            handle = did
        else:
            # A handle the document claims counts once it resolves back to this DID.
            handle = did
            for claim in claimed[:1]:
                try:
                    handle = claim if self._resolve_handle(claim) == did else did
                except (ProviderError, NotFound):
                    handle = did
        return Identity(did=did, handle=handle, pds_url=self._check_url(pds))

    def _did_document(self, did: str) -> dict:
        """A did:plc document from the PLC directory, a did:web one from its host."""
        if did.startswith("did:plc:"):
            url = f"{self._check_url(self._plc_url)}/{did}"
        elif did.startswith("did:web:") and ":" not in did[len("did:web:") :]:
            url = f"{self._check_url('https://' + did[len('did:web:') :])}/.well-known/did.json"
        else:
            raise OAuthError(f"{did}: not a DID method Bluesky uses")
        return self._get_json(url, missing=f"{did}: no DID document")

    def _get_json(self, url: str, missing: str = "") -> dict:
        """The JSON object at url; NotFound(missing) for a 404 if missing is given."""
        try:
            response = self._http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as error:
            raise ProviderError(f"{url}: {error.__class__.__name__}: {error}") from error
        if missing and response.status_code == 404:
            raise NotFound(missing)
        if response.status_code >= 500:
            raise ServerError(f"{url}: {_error_text(response)}", response.status_code)
        if response.status_code != 200:
            raise OAuthError(f"{url}: {_error_text(response)}")
        return _json_object(url, response)

    def authorization_server(self, pds_url: str) -> dict:
        """The metadata of the PDS's authorization server, checked for what atproto needs."""
        resource = self._get_json(f"{pds_url}/.well-known/oauth-protected-resource")
        # As the reference resolver: the document is the PDS's own, and names exactly one.
        if str(resource.get("resource", "")).rstrip("/") != pds_url.rstrip("/"):
            raise OAuthError(f"{pds_url}: its resource document is another's")
        servers = resource.get("authorization_servers") or []
        if len(servers) != 1 or not isinstance(servers[0], str):
            raise OAuthError(f"{pds_url}: names no single authorization server")
        issuer = self._check_url(servers[0])
        meta = self._get_json(f"{issuer}/.well-known/oauth-authorization-server")
        if str(meta.get("issuer", "")).rstrip("/") != issuer:
            raise OAuthError(f"{issuer}: its metadata names another issuer ({meta.get('issuer')})")
        needs = {
            "pushed authorization requests": meta.get("require_pushed_authorization_requests")
            is True
            and bool(meta.get("pushed_authorization_request_endpoint")),
            "PKCE S256": "S256" in (meta.get("code_challenge_methods_supported") or []),
            "DPoP ES256": "ES256" in (meta.get("dpop_signing_alg_values_supported") or []),
            "private_key_jwt": "private_key_jwt"
            in (meta.get("token_endpoint_auth_methods_supported") or []),
            "ES256 client assertions": "ES256"
            in (meta.get("token_endpoint_auth_signing_alg_values_supported") or []),
            "the iss parameter": meta.get("authorization_response_iss_parameter_supported") is True,
            "client metadata documents": meta.get("client_id_metadata_document_supported") is True,
        }
        missing = [name for name, ok in needs.items() if not ok]
        if missing or not meta.get("token_endpoint") or not meta.get("authorization_endpoint"):
            raise OAuthError(f"{issuer}: not an atproto authorization server (lacks {missing})")
        for name in ("token_endpoint", "pushed_authorization_request_endpoint"):
            self._check_url(meta[name])
        if meta.get("revocation_endpoint"):
            self._check_url(meta["revocation_endpoint"])
        if not str(meta["authorization_endpoint"]).startswith(("https://", "http://")):
            raise OAuthError(f"{issuer}: its authorization endpoint is not a web address")
        return meta

    # -- requests to the authorization server -----------------------------
    def _client_assertion(self, issuer: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": issuer,
            "jti": secrets.token_urlsafe(18),
            "iat": now,
            "exp": now + 60,
        }
        return jwt.encode({"alg": "ES256", "kid": self.client_key.kid}, claims, self.client_key)

    def _post(self, url: str, form: dict, key: jwk.ECKey, issuer: str) -> httpx.Response:
        """POST a form to the authorization server as this client, with a DPoP proof; once
        more with the server's nonce when it asks for one (each try a new assertion). The
        URL is checked every time: a name may resolve elsewhere months after sign-in."""
        self._check_url(url)
        for attempt in (1, 2):
            body = {
                **form,
                "client_id": self.client_id,
                "client_assertion_type": CLIENT_ASSERTION_TYPE,
                "client_assertion": self._client_assertion(issuer),
            }
            headers = {"DPoP": dpop_proof(key, "POST", url), "Accept": "application/json"}
            try:
                response = self._http.post(url, data=body, headers=headers)
            except httpx.HTTPError as error:
                raise ProviderError(f"{url}: {error.__class__.__name__}: {error}") from error
            remember_nonce(url, response)
            if attempt == 1 and nonce_challenge(response):
                continue
            if response.status_code >= 500:
                raise ServerError(f"{url}: {_error_text(response)}", response.status_code)
            return response
        return response

    def start(self, handle_or_did: str, scope: str, prompt: str = "") -> tuple[str, dict]:
        """Push the authorization request; return the URL to send the browser to and what
        the callback needs (JSON-safe, kept in the person's session until then).

        A PDS that refuses the granular scopes is asked again for transition:generic; the
        pending request's "scope" says which was asked. prompt="login" makes the server ask
        for the password even if the browser is signed in there (a fresh confirmation)."""
        who = self.identity(handle_or_did)
        meta = self.authorization_server(who.pds_url)
        key = jwk.ECKey.generate_key("P-256", private=True)
        verifier = secrets.token_urlsafe(64)
        state = secrets.token_urlsafe(24)
        par = meta["pushed_authorization_request_endpoint"]
        for asked in dict.fromkeys([scope, FALLBACK_SCOPE]):
            form = {
                "response_type": "code",
                "redirect_uri": self.redirect_uri,
                "scope": asked,
                "state": state,
                "code_challenge": _b64url_sha256(verifier),
                "code_challenge_method": "S256",
                "login_hint": who.handle if who.handle != who.did else who.did,
            }
            if prompt:
                form["prompt"] = prompt
            response = self._post(par, form, key, meta["issuer"])
            if response.status_code == 400 and _error_code(response) == "invalid_scope":
                continue
            break
        if response.status_code not in (200, 201):
            raise OAuthError(f"{par}: {_error_text(response)}")
        try:
            request_uri = response.json().get("request_uri")
        except (ValueError, AttributeError):
            request_uri = None
        if not isinstance(request_uri, str) or not request_uri:
            raise OAuthError(f"{par}: no request_uri in the answer")
        query = urlencode({"client_id": self.client_id, "request_uri": request_uri})
        pending = {
            "state": state,
            "verifier": verifier,
            "dpop_key": key.as_dict(private=True),
            "issuer": meta["issuer"],
            "token_endpoint": meta["token_endpoint"],
            "revocation_endpoint": meta.get("revocation_endpoint") or "",
            "did": who.did,
            "handle": who.handle,
            "pds_url": who.pds_url,
            "scope": asked,
            "redirect_uri": self.redirect_uri,
            "prompt": prompt,
        }
        return f"{meta['authorization_endpoint']}?{query}", pending

    def finish(self, pending: dict, params: dict) -> Grant:
        """Trade the callback's code for tokens. params: the callback's query (code, state,
        iss, or error). The caller has matched state to pending already."""
        if params.get("error"):
            raise OAuthError(f"{params['error']}: {params.get('error_description', '')}")
        if not secrets.compare_digest(str(params.get("state", "")), pending["state"]):
            raise OAuthError("the answer is for another sign-in (state)")
        if params.get("iss") != pending["issuer"]:
            raise OAuthError(f"the answer came from {params.get('iss')}, not {pending['issuer']}")
        form = {
            "grant_type": "authorization_code",
            "code": params.get("code", ""),
            "code_verifier": pending["verifier"],
            "redirect_uri": pending["redirect_uri"],
        }
        key = jwk.ECKey.import_key(pending["dpop_key"])
        data = self._token(pending["token_endpoint"], form, key, pending["issuer"])
        grant = Grant(
            did=pending["did"],
            handle=pending["handle"],
            pds_url=pending["pds_url"],
            issuer=pending["issuer"],
            token_endpoint=pending["token_endpoint"],
            revocation_endpoint=pending["revocation_endpoint"],
            client_id=self.client_id,
            scope=data["scope"],
            access_token=data["access_token"],
            refresh_token=data.get("refresh_token", ""),
            expires_at=_expires_at(data),
            dpop_key=pending["dpop_key"],
        )
        # As the reference client does: tokens for another account, or without what the
        # app asked for, are revoked at once rather than kept.
        granted = set(grant.scope.split())
        if data.get("sub") != pending["did"]:
            problem = f"signed in as {data.get('sub')}, not {pending['did']}"
        elif "transition:generic" not in granted and not set(pending["scope"].split()) <= granted:
            missing = sorted(set(pending["scope"].split()) - granted)
            problem = f"the server granted less than Shoestring needs (not {', '.join(missing)})"
        else:
            return grant
        with contextlib.suppress(ProviderError):
            self.revoke(grant)
        raise OAuthError(problem)

    def _token(self, url: str, form: dict, key: jwk.ECKey, issuer: str) -> dict:
        response = self._post(url, form, key, issuer)
        if response.status_code in (400, 401) and _error_code(response) == "invalid_grant":
            raise GrantRevoked(f"{url}: {_error_text(response)}")
        if response.status_code != 200:
            raise OAuthError(f"{url}: {_error_text(response)}")
        data = _json_object(url, response)
        if str(data.get("token_type", "")).lower() != "dpop":
            raise OAuthError(f"{url}: the token is not DPoP-bound ({data.get('token_type')})")
        if "atproto" not in str(data.get("scope", "")).split() or not data.get("access_token"):
            raise OAuthError(f"{url}: the grant lacks the atproto scope")
        return data

    def refresh(self, grant: Grant) -> Grant:
        """A new access token and a new refresh token (the old one is dead from now on).

        As the reference client does before each refresh, the account's DID document is read
        again: Bluesky moves accounts between its PDS hosts under one authorization server,
        so the grant follows its PDS; an account whose server is now another authorization
        server's cannot be refreshed here (GrantRevoked: its person signs in again)."""
        if not grant.refresh_token:
            raise GrantRevoked("no refresh token")
        pds_url = self.identity(grant.did, handle_back=False).pds_url
        if pds_url != grant.pds_url:
            issuer = self.authorization_server(pds_url)["issuer"]
            if issuer != grant.issuer:
                raise GrantRevoked(f"{grant.did} moved to {pds_url}, another server's account")
        form = {"grant_type": "refresh_token", "refresh_token": grant.refresh_token}
        data = self._token(grant.token_endpoint, form, grant.key, grant.issuer)
        if data.get("sub") != grant.did:
            raise OAuthError(f"the refresh answered for {data.get('sub')}, not {grant.did}")
        return Grant(
            **{
                **asdict(grant),
                "pds_url": pds_url,
                "scope": data["scope"],
                "access_token": data["access_token"],
                "refresh_token": data.get("refresh_token", ""),
                "expires_at": _expires_at(data),
            }
        )

    def revoke(self, grant: Grant) -> None:
        """End the grant at the authorization server (RFC 7009: the refresh token's revocation
        ends its access tokens too). Unknown tokens are not an error."""
        if not grant.revocation_endpoint:
            return
        token = grant.refresh_token or grant.access_token
        response = self._post(grant.revocation_endpoint, {"token": token}, grant.key, grant.issuer)
        if response.status_code != 200:
            raise OAuthError(f"revocation: {_error_text(response)}")


class DpopAuth:
    """How BlueskyClient calls a PDS with an OAuth grant: DPoP-bound access token and proof,
    the PDS's nonce, and a refresh (through renew, which persists and serialises it) when
    the token is about to run out or is refused."""

    def __init__(self, grant: Grant, renew: Callable[[Grant], Grant]):
        self.grant = grant
        self._renew = renew
        self._key = grant.key

    def renew(self) -> None:
        self.grant = self._renew(self.grant)
        self._key = self.grant.key

    def headers(self, method: str, url: str) -> dict:
        expires_at = self.grant.expires_at
        if expires_at is not None and expires_at - EXPIRY_MARGIN_S < time.time():
            self.renew()
        token = self.grant.access_token
        return {
            "Authorization": f"DPoP {token}",
            "DPoP": dpop_proof(self._key, method, url, access_token=token),
        }
