"""OAuth clients: the client_id URL, the metadata document behind it, and client authentication.

Checked against bluesky-social/atproto:
- packages/oauth/oauth-types/src/oauth-client-id-discoverable.ts, uri.ts, util.ts: a client_id
  is an https URL with a path (not "/", no trailing slash), in canonical form, without
  credentials or fragment, whose host is a domain name (not an IP address, not localhost, at
  least two labels, not .local); oauth-provider client/client-utils.ts: not a local name either
  (one label, or .test, .local, .localhost, .invalid, .example);
- packages/oauth/oauth-provider/src/client/client-manager.ts: the document is fetched with
  Accept: application/json, redirects refused, must answer 2xx with Content-Type
  application/json; jwks_uri likewise (any Content-Type); both cached 10 minutes
  (oauth-provider.ts: clientMetadataCache, clientJwksCache, ttl 600e3); the fetch is
  packages/pds/src/context.ts's safeFetch (fetch-node/src/safe.ts): 10 s, 512 kB, no IP host, no
  custom port;
- oauth-types/src/oauth-client-metadata.ts (the document's shape and defaults) and
  client-manager.ts validateClientMetadata / validateDiscoverableClientMetadata (every rule
  below, with its message);
- client/client.ts: private_key_jwt: a client_assertion JWT signed by a key of the client's
  JWKS, iss = sub = client_id, aud = the issuer, "jti" required, "iat" at most 60 s old
  (CLIENT_ASSERTION_MAX_AGE), "kid" in its header; the key's SHA-512 thumbprint binds the grant
  (authJwkThumbprint); lifetimes: confidential clients 2 years a session, 3 months between
  refreshes, public ones 2 weeks each (oauth-constants.ts).
The fake's own leniencies, for the demo and tests only (config.py): oauth_allow_loopback_clients
and oauth_client_fetch_via.
"""

import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from . import jose
from .oauth_errors import (
    OAuthError,
    invalid_client,
    invalid_client_id,
    invalid_client_metadata,
    invalid_redirect_uri,
    invalid_request,
)

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AUTH_METHODS_SUPPORTED = ("none", "private_key_jwt")
GRANT_TYPES = (
    "authorization_code",
    "implicit",
    "refresh_token",
    "password",
    "client_credentials",
    "urn:ietf:params:oauth:grant-type:jwt-bearer",
    "urn:ietf:params:oauth:grant-type:saml2-bearer",
)
SERVER_GRANT_TYPES = ("authorization_code", "refresh_token")
RESPONSE_TYPES = (
    "code",
    "token",
    "none",
    "code id_token token",
    "code id_token",
    "code token",
    "id_token token",
    "id_token",
)
AUTH_METHODS = (
    "client_secret_basic",
    "client_secret_jwt",
    "client_secret_post",
    "none",
    "private_key_jwt",
    "self_signed_tls_client_auth",
    "tls_client_auth",
)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
_LOCAL_TLDS = ("test", "local", "localhost", "invalid", "example")
_DAY = 86400
_YEAR = 365.25 * _DAY


def is_ip(host):
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def is_local_hostname(host):
    parts = host.split(".")
    return len(parts) < 2 or parts[-1].lower() in _LOCAL_TLDS


def _url(value):
    """urlsplit + port, or None when it does not parse as a URL with a host."""
    if not isinstance(value, str) or ":" not in value:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError:
        return None
    return parts


def _canonical_path(path):
    """Whether WHATWG's URL parser would print this path unchanged."""
    if not path or "\\" in path or any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in path):
        return False
    segments = path.split("/")
    return not any(s in (".", "..") for s in segments) and not any(c in path for c in '"<>`{}')


def https_uri_problem(value, lenient=False):
    """uri.ts httpsUriSchema: None, or why it is not acceptable."""
    parts = _url(value)
    if parts is None or not parts.hostname:
        return "Invalid URL"
    if not value.startswith("https://"):
        return 'URL must use the "https:" protocol'
    host = parts.hostname
    if lenient and (host in LOOPBACK_HOSTS or is_local_hostname(host)):
        return None
    if host in LOOPBACK_HOSTS:
        return "https: URL must not use a loopback host"
    if not is_ip(host):
        if "." not in host:
            return "Domain name must contain at least two segments"
        if host.endswith(".local"):
            return 'Domain name must not end with ".local"'
    return None


def web_uri_problem(value, lenient=False):
    """uri.ts webUriSchema: http only on a loopback host, else https."""
    if isinstance(value, str) and value.startswith("http://"):
        parts = _url(value)
        if parts is None or parts.hostname not in LOOPBACK_HOSTS:
            return 'URL must use "localhost", "127.0.0.1" or "[::1]" as hostname'
        return None
    if isinstance(value, str) and value.startswith("https://"):
        return https_uri_problem(value, lenient)
    return 'URL must use the "http:" or "https:" protocol'


def client_id_url(client_id, config):
    """The client_id as a URL to fetch; raises invalid_client_metadata / invalid_client_id."""
    lenient = config.oauth_allow_loopback_clients
    if not isinstance(client_id, str) or not client_id:
        raise invalid_client_metadata(f'Invalid client ID "{client_id}"')
    parts = _url(client_id)
    host = parts.hostname if parts else None
    loopback = lenient and host in LOOPBACK_HOSTS
    if loopback and client_id.startswith("http://"):
        problem = None  # the fake's leniency: a client on this machine, served over http
    else:
        problem = https_uri_problem(client_id, lenient)
    if problem is None and parts is not None:
        if parts.username is not None or parts.password is not None:
            problem = "ClientID must not contain credentials"
        elif parts.fragment or client_id.endswith("#"):
            problem = "ClientID must not contain a fragment"
        elif parts.path in ("", "/"):
            problem = 'ClientID must contain a path component (e.g. "/client-metadata.json")'
        elif parts.path.endswith("/"):
            problem = "ClientID path must not end with a trailing slash"
        elif is_ip(host) and not loopback:
            problem = "ClientID hostname must not be an IP address"
        elif not _canonical_path(parts.path):
            problem = f'ClientID must be in canonical form (got "{client_id}")'
    if problem is not None:
        # client-manager.ts getClientMetadata: not discoverable (nor loopback, nor stored).
        raise invalid_client_metadata(f'Invalid client ID "{client_id}"')
    if not lenient:
        if is_local_hostname(host):
            raise invalid_client_id("The client_id's TLD must not be a local hostname")
        if parts.port is not None:
            # safe.ts: no custom port while SSRF protection is on.
            raise invalid_client_metadata(
                f'Unable to obtain client metadata for "{client_id}": Request port must be'
                " omitted or standard when SSRF is enabled"
            )
    return parts


class FetchError(Exception):
    pass


class _ViaHTTPSConnection(http.client.HTTPSConnection):
    """TLS to the oauth_client_fetch_via address, with the client_id's name as SNI."""

    def __init__(self, host, port, server_name, timeout):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # test-only: the demo's certificate is self-signed
        super().__init__(host, port, timeout=timeout, context=context)
        self.server_name = server_name

    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.server_name)


def fetch_json(url, config, json_type_required):
    """GET a JSON document the way the reference's safeFetch does; FetchError otherwise."""
    parts = urlsplit(url)
    timeout = config.oauth_client_fetch_timeout_s
    via = config.oauth_client_fetch_via
    if via:
        target = urlsplit(via)
        scheme, host = target.scheme, target.hostname
        port = target.port or (443 if scheme == "https" else 80)
    else:
        scheme, host = parts.scheme, parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
    if scheme == "https" and via:
        connection = _ViaHTTPSConnection(host, port, parts.hostname, timeout)
    elif scheme == "https":
        connection = http.client.HTTPSConnection(host, port, timeout=timeout)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    limit = config.oauth_client_max_bytes
    try:
        connection.request(
            "GET",
            path,
            headers={"Host": parts.netloc, "Accept": "application/json", "User-Agent": "fakesky"},
        )
        response = connection.getresponse()
        if 300 <= response.status < 400:
            raise FetchError(f"Unexpected redirect (HTTP {response.status})")
        if not 200 <= response.status < 300:
            raise FetchError(f"Unexpected status code {response.status}")
        mime = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        if json_type_required and mime != "application/json":
            raise FetchError(f'Unexpected response Content-Type "{mime}"')
        body = response.read(limit + 1)
    except (OSError, http.client.HTTPException) as error:
        raise FetchError(f"Unable to fetch {url}: {error}") from None
    finally:
        connection.close()
    if len(body) > limit:
        raise FetchError("Response too large")
    try:
        return json.loads(body)
    except ValueError:
        raise FetchError("Invalid JSON") from None


def _schema_problem(name, value, check):
    """oauth-client-metadata.ts: the message for a field of the wrong shape, or None."""
    if value is None:
        return None
    if check == "string" and not isinstance(value, str):
        return "Expected string"
    if check == "bool" and not isinstance(value, bool):
        return "Expected boolean"
    if check == "web_uri":
        return web_uri_problem(value) if isinstance(value, str) else "Expected string"
    if check == "scope":
        if not isinstance(value, str) or not _scope_syntax(value):
            return "Invalid OAuth scope"
        return None
    if isinstance(check, tuple):
        kind, allowed = check
        if kind == "enum":
            return None if value in allowed else f"Invalid enum value for {name}"
        if not isinstance(value, list) or not value:
            return "Expected a non-empty array"
        if any(v not in allowed for v in value):
            return f"Invalid enum value in {name}"
    return None


def _scope_syntax(value):
    # oauth-scope.ts OAUTH_SCOPE_REGEXP: printable ASCII but space, '"' and '\', single spaces.
    tokens = value.split(" ")
    return all(t and all(0x21 <= ord(c) <= 0x7E and c not in '"\\' for c in t) for t in tokens)


_FIELDS = {
    "response_types": ("array", RESPONSE_TYPES),
    "grant_types": ("array", GRANT_TYPES),
    "scope": "scope",
    "token_endpoint_auth_method": ("enum", AUTH_METHODS),
    "token_endpoint_auth_signing_alg": "string",
    "jwks_uri": "web_uri",
    "application_type": ("enum", ("web", "native")),
    "subject_type": ("enum", ("public", "pairwise")),
    "client_id": "string",
    "client_name": "string",
    "client_uri": "web_uri",
    "policy_uri": "web_uri",
    "tos_uri": "web_uri",
    "logo_uri": "web_uri",
    "dpop_bound_access_tokens": "bool",
}
_DEFAULTS = {
    "response_types": ["code"],
    "grant_types": ["authorization_code"],
    "token_endpoint_auth_method": "client_secret_basic",
    "application_type": "web",
    "subject_type": "public",
}


def redirect_uri_problem(value, lenient=False):
    """oauth-redirect-uri.ts: https, http on a loopback IP, or a private-use scheme."""
    if not isinstance(value, str):
        return "Expected string"
    if value.startswith("https:"):
        return https_uri_problem(value, lenient)
    if value.startswith("http:"):
        parts = _url(value)
        if parts is None or parts.hostname not in LOOPBACK_HOSTS:
            return 'URL must use "localhost", "127.0.0.1" or "[::1]" as hostname'
        if value.startswith("http://localhost") and not lenient:
            return (
                'Use of "localhost" hostname is not allowed (RFC 8252), use a loopback IP such'
                ' as "127.0.0.1" instead'
            )
        return None
    scheme = value.split(":", 1)[0]
    if ":" in value and "." in scheme and "/" not in scheme:
        domain = ".".join(reversed(scheme.split(".")))
        if is_local_hostname(domain):
            return "Private-use URI Scheme redirect URI must not be a local hostname"
        return None
    return 'URL must use the "https:" or "http:" protocol, or a private-use URI scheme (RFC 8252)'


def _parse_metadata(client_id, raw, lenient):
    """The document with the schema's defaults; raises invalid_client_metadata."""
    prefix = f'Unable to obtain client metadata for "{client_id}"'
    if not isinstance(raw, dict):
        raise invalid_client_metadata(f"{prefix}: Validation failed with error: Expected object")
    metadata = {**_DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}
    redirect_uris = metadata.get("redirect_uris")
    if not isinstance(redirect_uris, list) or not redirect_uris:
        raise invalid_client_metadata(
            f'{prefix}: Validation of "redirect_uris" failed with error: Expected a non-empty array'
        )
    for index, uri in enumerate(redirect_uris):
        problem = redirect_uri_problem(uri, lenient)
        if problem:
            raise invalid_client_metadata(
                f'{prefix}: Validation of "redirect_uris.{index}" failed with error: {problem}'
            )
    for name, check in _FIELDS.items():
        if name in ("client_uri", "jwks_uri") and isinstance(metadata.get(name), str):
            problem = web_uri_problem(metadata[name], lenient)
        else:
            problem = _schema_problem(name, metadata.get(name), check)
        if problem:
            raise invalid_client_metadata(
                f'{prefix}: Validation of "{name}" failed with error: {problem}'
            )
    if "jwks" in metadata:
        keys = jose.public_jwks(metadata["jwks"])
        if keys is None:
            raise invalid_client_metadata(
                f'{prefix}: Validation of "jwks" failed with error: Expected object'
            )
        metadata["jwks"] = {"keys": keys}
    return metadata


def _duplicate(values):
    return next((v for i, v in enumerate(values) if v in values[i + 1 :]), None)


def validate_metadata(client_id, raw, config):
    """client-manager.ts validateClientMetadata + validateDiscoverableClientMetadata."""
    lenient = config.oauth_allow_loopback_clients
    metadata = _parse_metadata(client_id, raw, lenient)
    if metadata.get("jwks") and metadata.get("jwks_uri"):
        raise invalid_client_metadata("jwks_uri and jwks are mutually exclusive")
    for name in (
        "default_max_age",
        "userinfo_signed_response_alg",
        "id_token_signed_response_alg",
        "userinfo_encrypted_response_alg",
    ):
        if metadata.get(name) is not None:
            raise invalid_client_metadata(f'Unsupported "{name}" parameter')
    client_uri = _url(metadata.get("client_uri"))
    if client_uri and is_local_hostname(client_uri.hostname or "") and not lenient:
        raise invalid_client_metadata("client_uri hostname is invalid")
    declared = metadata["scope"].split(" ") if metadata.get("scope") else None
    if not declared:
        raise invalid_client_metadata("Missing scope property")
    if "atproto" not in declared:
        raise invalid_client_metadata('Missing "atproto" scope')
    duplicate = _duplicate(declared)
    if duplicate:
        raise invalid_client_metadata(f'Duplicate scope "{duplicate}"')
    duplicate = _duplicate(metadata["grant_types"])
    if duplicate:
        raise invalid_client_metadata(f'Duplicate grant type "{duplicate}"')
    for grant_type in metadata["grant_types"]:
        if grant_type == "implicit":
            raise invalid_client_metadata(f'Grant type "{grant_type}" is not allowed')
        if grant_type not in SERVER_GRANT_TYPES:
            raise invalid_client_metadata(f'Grant type "{grant_type}" is not supported')
    if metadata.get("client_id") and metadata["client_id"] != client_id:
        raise invalid_client_metadata("client_id does not match")
    if metadata["subject_type"] != "public":
        raise invalid_client_metadata('Only "public" subject_type is supported')
    method = metadata["token_endpoint_auth_method"]
    if method == "none":
        if metadata.get("token_endpoint_auth_signing_alg"):
            raise invalid_client_metadata(
                'token_endpoint_auth_method "none" must not have token_endpoint_auth_signing_alg'
            )
    elif method == "private_key_jwt":
        if not metadata.get("jwks") and not metadata.get("jwks_uri"):
            raise invalid_client_metadata("private_key_jwt auth method requires jwks or jwks_uri")
        if metadata.get("jwks") and not metadata["jwks"]["keys"]:
            raise invalid_client_metadata(
                "private_key_jwt auth method requires at least one key in jwks"
            )
        if not metadata.get("token_endpoint_auth_signing_alg"):
            raise invalid_client_metadata("Missing token_endpoint_auth_signing_alg client metadata")
    else:
        raise invalid_client_metadata(
            f'Unsupported client authentication method "{method}". Make sure'
            f' "token_endpoint_auth_method" is set to one of: "none", "private_key_jwt"'
        )
    if metadata.get("authorization_encrypted_response_enc"):
        raise invalid_client_metadata("Encrypted authorization response is not supported")
    if metadata.get("tls_client_certificate_bound_access_tokens"):
        raise invalid_client_metadata("Mutual-TLS bound access tokens are not supported")
    if metadata.get("dpop_bound_access_tokens") is not True:
        raise invalid_client_metadata('"dpop_bound_access_tokens" must be true')
    if "code" not in metadata["response_types"]:
        raise invalid_client_metadata('response_types must include "code"')
    if "authorization_code" not in metadata["grant_types"]:
        raise invalid_client_metadata(
            'The "code" response type requires that "grant_types" contains "authorization_code"'
        )
    if metadata.get("authorization_details_types"):
        raise invalid_client_metadata("authorization_details_types are not supported")
    if metadata["application_type"] == "native" and method != "none":
        raise invalid_client_metadata('Native clients must authenticate using "none" method')
    _check_redirect_uris(client_id, metadata, lenient)
    if not metadata.get("client_id"):
        raise invalid_client_metadata("client_id is required for discoverable clients")
    return metadata


def _check_redirect_uris(client_id, metadata, lenient):
    client = urlsplit(client_id)
    if metadata.get("client_uri"):
        uri = urlsplit(metadata["client_uri"])
        if (uri.scheme, uri.netloc) != (client.scheme, client.netloc):
            raise invalid_client_metadata("client_uri must have the same origin as the client_id")
        parent = uri.path if uri.path.endswith("/") else f"{uri.path}/"
        if client.path != uri.path and not client.path.startswith(parent):
            raise invalid_client_metadata("client_uri must be a parent URL of the client_id")
    for redirect_uri in metadata["redirect_uris"]:
        url = urlsplit(redirect_uri)
        host = url.hostname or ""
        if url.username or url.password:
            raise invalid_redirect_uri(f"Redirect URI {redirect_uri} must not contain credentials")
        if lenient and (
            host in LOOPBACK_HOSTS or (url.scheme == "https" and is_local_hostname(host))
        ):
            continue  # the fake's leniency: a test's or the demo's client on this machine
        if host == "localhost":
            raise invalid_redirect_uri(
                f"Loopback redirect URI {redirect_uri} is not allowed (use explicit IPs instead)"
            )
        if host in ("127.0.0.1", "::1"):
            if metadata["application_type"] != "native":
                raise invalid_redirect_uri(
                    "Loopback redirect URIs are only allowed for native apps"
                )
            if url.scheme != "http":
                raise invalid_redirect_uri(f"Loopback redirect URI {redirect_uri} must use HTTP")
        elif url.scheme == "http":
            raise invalid_redirect_uri(
                'Only loopback redirect URIs are allowed to use the "http" scheme'
            )
        elif url.scheme == "https":
            if is_local_hostname(host):
                raise invalid_redirect_uri(
                    f'Redirect URI "{redirect_uri}"\'s domain name must not be a local hostname'
                )
        elif "." in url.scheme:
            if metadata["application_type"] != "native":
                raise invalid_redirect_uri(
                    "Private-Use URI Scheme redirect URI are only allowed for native apps"
                )
            expected = ".".join(reversed((client.hostname or "").split(".")))
            if url.scheme != expected:
                raise invalid_redirect_uri(
                    "Private-Use URI Scheme redirect URI, for discoverable client metadata, must"
                    " be the fully qualified domain name (FQDN) of the client_id, in reverse"
                    f" order ({expected}:)"
                )
        else:
            raise invalid_redirect_uri(f'Invalid redirect URI scheme "{url.scheme}:"')


def redirect_uri_matches(allowed, requested):
    """redirect-uri.ts compareRedirectUri: exact, or a loopback one on any port."""
    if allowed == requested:
        return True
    a, r = urlsplit(allowed), _url(requested)
    if r is None or a.hostname not in LOOPBACK_HOSTS:
        return False
    return (
        (a.port is None or a.port == r.port)
        and (a.hostname, a.path, a.scheme, a.query, a.fragment)
        == (r.hostname, r.path, r.scheme, r.query, r.fragment)
        and (a.username, a.password) == (r.username, r.password)
    )


@dataclass
class Client:
    id: str
    metadata: dict
    jwks: list = field(default_factory=list)  # public JWKs (dicts)

    @property
    def confidential(self):
        return self.metadata["token_endpoint_auth_method"] != "none"  # noqa: S105 - a method name

    def session_lifetime_s(self, config):
        return (
            config.oauth_confidential_session_s
            if self.confidential
            else config.oauth_public_session_s
        )

    def refresh_lifetime_s(self, config):
        return (
            config.oauth_confidential_refresh_s
            if self.confidential
            else config.oauth_public_refresh_s
        )

    def authenticate(self, credentials, issuer, config, now):
        """client.ts authenticate(): the client's authentication, or raise."""
        method = self.metadata["token_endpoint_auth_method"]
        if method == "none":
            return {"method": "none"}
        if "client_assertion" not in credentials:
            raise invalid_request(
                f'client authentication method "{method}" required a "client_assertion"'
            )
        assertion = credentials["client_assertion"]
        try:
            header = jose.protected_header(assertion)
            key = jose.select_key(self.jwks, header)
            header, claims = jose.verify(assertion, key)
            jose.check_claims(
                header,
                claims,
                issuer=self.id,
                subject=self.id,
                audience=issuer,
                required=("jti",),
                max_token_age=config.oauth_client_assertion_max_age_s,
                now=now,
            )
        except jose.JoseError as error:
            raise invalid_client(
                f'Validation of "client_assertion" failed: {error.message}'
            ) from None
        if not header.get("kid"):
            raise invalid_client('"kid" required in client_assertion')
        return {
            "method": "private_key_jwt",
            "jti": claims["jti"],
            "exp": claims.get("exp"),
            "jkt": jose.thumbprint(key, sha512=True),
            "alg": header["alg"],
            "kid": header["kid"],
        }

    def validate_request(self, parameters):
        """client.ts validateRequest: the request against what the client declared."""
        if parameters.get("client_id") != self.id:
            raise invalid_request(
                'The "client_id" parameter field does not match the value used to authenticate'
                " the client"
            )
        if parameters.get("scope") is not None:
            declared = (self.metadata.get("scope") or "").split(" ")
            for scope in parameters["scope"].split(" "):
                if scope not in declared:
                    raise OAuthError(
                        "invalid_scope", f'Scope "{scope}" is not declared in the client metadata'
                    )
        if parameters["response_type"] not in self.metadata["response_types"]:
            raise invalid_request(
                f'Invalid response_type "{parameters["response_type"]}" requested by the client'
            )
        redirect_uri = parameters.get("redirect_uri")
        uris = self.metadata["redirect_uris"]
        if redirect_uri:
            if not any(redirect_uri_matches(uri, redirect_uri) for uri in uris):
                raise invalid_request(f"Invalid redirect_uri {redirect_uri}")
        elif len(uris) == 1:
            parameters = {**parameters, "redirect_uri": uris[0]}
        else:
            raise invalid_request("redirect_uri is required")
        return parameters


class ClientManager:
    """Fetches and caches client documents; client-manager.ts getClient()."""

    def __init__(self):
        self._lock = threading.Lock()
        self._cache = {}  # url -> (expires_at, metadata or JWKS)

    def __getstate__(self):
        return {}  # a restarted fake fetches again

    def __setstate__(self, state):
        self.__init__()

    def clear(self):
        with self._lock:
            self._cache.clear()

    def _cached(self, url, config, load):
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(url)
            if hit and hit[0] > now:
                return hit[1]
        value = load()
        with self._lock:
            self._cache[url] = (now + config.oauth_client_cache_s, value)
        return value

    def get(self, client_id, config):
        """The client, fetched (or from the cache) and validated; raises OAuthError."""
        parts = client_id_url(client_id, config)

        def load_metadata():
            try:
                raw = fetch_json(parts.geturl(), config, json_type_required=True)
            except FetchError as error:
                raise invalid_client_metadata(
                    f'Unable to obtain client metadata for "{client_id}": {error}'
                ) from None
            return validate_metadata(client_id, raw, config)

        metadata = self._cached(("metadata", client_id), config, load_metadata)
        keys = (metadata.get("jwks") or {}).get("keys", [])
        jwks_uri = metadata.get("jwks_uri")
        if jwks_uri:

            def load_jwks():
                try:
                    found = jose.public_jwks(fetch_json(jwks_uri, config, False))
                except FetchError as error:
                    found, problem = None, str(error)
                else:
                    problem = "Invalid JWKS"
                if found is None:
                    raise invalid_client_metadata(
                        f'Unable to obtain jwks from "{jwks_uri}" for "{client_id}": {problem}'
                    )
                return found

            keys = self._cached(("jwks", jwks_uri), config, load_jwks)
        return Client(client_id, metadata, keys)
