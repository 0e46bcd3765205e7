"""A bare OAuth client for the fake's tests (httpx + jwcrypto), and a site that serves client
metadata documents. Every request and proof is built here by hand, so a test can break any
single part of it and see what the fake answers."""

import base64
import datetime
import hashlib
import json
import secrets
import ssl
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jwcrypto import jwk, jws

CLIENT_ID = "https://app.example.com/oauth-client-metadata.json"
REDIRECT_URI = "https://app.example.com/oauth/callback"
APPVIEW = "did:web:api.bsky.app%23bsky_appview"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
UNSET = object()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(key, header, claims):
    signed = jws.JWS(json.dumps(claims).encode())
    signed.add_signature(key, alg=header["alg"], protected=header)
    return signed.serialize(compact=True)


def claims_of(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def pkce():
    verifier = b64url(secrets.token_bytes(48))
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


class ClientSite:
    """An http server on 127.0.0.1 that answers the documents it was given, whatever the Host
    (the fake reaches it through oauth_client_fetch_via), and remembers what it was asked.
    With tls: https with a self-signed certificate, the TLS server names asked kept too."""

    def __init__(self, tls=False):
        self.documents = {}  # path -> (status, content type, body)
        self.asked = []  # (path, Host header)
        self.server_names = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                site.asked.append((self.path, self.headers.get("Host")))
                status, content_type, body = site.documents.get(
                    self.path, (404, "text/plain", b"not found")
                )
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls:
            self.server.socket = self._tls_context().wrap_socket(
                self.server.socket, server_side=True
            )
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"

    def _tls_context(self):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self-signed.invalid")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .sign(key, hashes.SHA256())
        )
        folder = tempfile.mkdtemp()
        cert_path, key_path = f"{folder}/cert.pem", f"{folder}/key.pem"
        with open(cert_path, "wb") as out:
            out.write(certificate.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as out:
            out.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path)
        context.sni_callback = lambda sock, server_name, ctx: self.server_names.append(server_name)
        return context

    def serve(self, path, document, content_type="application/json", status=200):
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.documents[path] = (status, content_type, body)

    def close(self):
        self.server.shutdown()


class Client:
    """One confidential web client (private_key_jwt, ES256) and one DPoP key of one session."""

    def __init__(self, fake_url, issuer, site, client_id=CLIENT_ID, scope=None):
        self.http = httpx.Client(base_url=fake_url, timeout=10)
        self.issuer, self.site, self.client_id = issuer, site, client_id
        self.scope = scope or "atproto transition:generic"
        self.key = jwk.JWK.generate(kty="EC", crv="P-256", kid="client-key-1")
        self.dpop_key = jwk.JWK.generate(kty="EC", crv="P-256")
        self.nonce = None
        self.verifier = None

    # -- the client's documents --------------------------------------------------------
    def metadata(self, **changes):
        document = {
            "client_id": self.client_id,
            "client_name": "Shoestring (test)",
            "application_type": "web",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "redirect_uris": [REDIRECT_URI],
            "scope": self.scope,
            "dpop_bound_access_tokens": True,
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "ES256",
            "jwks_uri": "https://app.example.com/jwks.json",
        }
        document.update(changes)
        return {k: v for k, v in document.items() if v is not None}

    def publish(self, **changes):
        self.site.serve(urlsplit(self.client_id).path, self.metadata(**changes))
        self.site.serve("/jwks.json", {"keys": [self.key.export_public(as_dict=True)]})

    # -- JWTs ---------------------------------------------------------------------------
    def proof(self, method, path, nonce=UNSET, token=None, key=None, header=None, **claims):
        key = key or self.dpop_key
        body = {
            "jti": secrets.token_urlsafe(12),
            "htm": method,
            "htu": self.issuer + path,
            "iat": int(time.time()),
        }
        nonce = self.nonce if nonce is UNSET else nonce
        if nonce:
            body["nonce"] = nonce
        if token:
            body["ath"] = b64url(hashlib.sha256(token.encode()).digest())
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        protected = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.export_public(as_dict=True)}
        protected.update(header or {})
        return sign(key, protected, body)

    def assertion(self, key=None, **claims):
        now = int(time.time())
        body = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.issuer,
            "jti": secrets.token_urlsafe(12),
            "iat": now,
            "exp": now + 60,
        }
        body.update(claims)
        key = key or self.key
        return sign(key, {"alg": "ES256", "kid": key.get("kid") or "client-key-1"}, body)

    # -- the authorization server --------------------------------------------------------
    def post(self, path, form, proof=UNSET, assertion=UNSET, retry=True):
        """POST form to an OAuth endpoint as the client; one retry on use_dpop_nonce."""
        body = {"client_id": self.client_id, **form}
        if assertion is UNSET:
            assertion = self.assertion()
        if assertion:
            body.update(client_assertion_type=JWT_BEARER, client_assertion=assertion)
        headers = {}
        given = proof
        if given is UNSET:
            given = self.proof("POST", path)
        if given:
            headers["DPoP"] = given
        response = self.http.post(path, data=body, headers=headers)
        if "DPoP-Nonce" in response.headers:
            self.nonce = response.headers["DPoP-Nonce"]
        if retry and proof is UNSET and _error(response) == "use_dpop_nonce":
            return self.post(path, form, assertion=UNSET if assertion else None, retry=False)
        return response

    def par_form(self, scope=None, **params):
        """A valid pushed authorization request (its PKCE verifier kept for the token)."""
        self.verifier, challenge = pkce()
        form = {
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": scope or self.scope,
            "state": secrets.token_urlsafe(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        form.update(params)
        return {k: v for k, v in form.items() if v is not None}

    def par(self, scope=None, **params):
        return self.post("/oauth/par", self.par_form(scope, **params))

    def authorize(self, request_uri, username, password, decision="approve"):
        """The browser: the form, posted back to the page's URL."""
        return self.http.post(
            "/oauth/authorize",
            params={"client_id": self.client_id, "request_uri": request_uri},
            data={
                "client_id": self.client_id,
                "request_uri": request_uri,
                "username": username,
                "password": password,
                "decision": decision,
            },
        )

    def tokens(self, code, verifier=None, **extra):
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier or self.verifier,
        }
        form.update(extra)
        return self.post("/oauth/token", form)

    def refresh(self, refresh_token):
        return self.post(
            "/oauth/token", {"grant_type": "refresh_token", "refresh_token": refresh_token}
        )

    def revoke(self, token):
        return self.post("/oauth/revoke", {"token": token})

    def code(self, handle, password, scope=None, **params):
        """PAR and the approved page: the code."""
        par = self.par(scope, **params)
        assert par.status_code == 201, par.text
        answer = self.authorize(par.json()["request_uri"], handle, password)
        assert answer.status_code == 303, answer.text
        return parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]

    def login(self, handle, password, scope=None):
        """The whole flow: the token response."""
        response = self.tokens(self.code(handle, password, scope))
        assert response.status_code == 200, response.text
        return response.json()

    # -- the resource server ---------------------------------------------------------------
    def xrpc(self, method, nsid, token, params=None, body=None, proof=UNSET, headers=None):
        path = f"/xrpc/{nsid}"
        sent = {"Authorization": f"DPoP {token}", **(headers or {})}
        given = self.proof(method, path, token=token) if proof is UNSET else proof
        if given:
            sent["DPoP"] = given
        response = self.http.request(method, path, params=params, json=body, headers=sent)
        if "DPoP-Nonce" in response.headers:
            self.nonce = response.headers["DPoP-Nonce"]
        if proof is UNSET and _error(response) == "use_dpop_nonce":
            sent["DPoP"] = self.proof(method, path, token=token)
            response = self.http.request(method, path, params=params, json=body, headers=sent)
        return response


def _error(response):
    try:
        return response.json().get("error")
    except ValueError:
        return None
