"""DPoP (RFC 9449) as the reference checks it: server nonces, proofs, replays.

Checked against bluesky-social/atproto packages/oauth/oauth-provider/src/:
- dpop/dpop-nonce.ts: a nonce is HMAC-SHA256(secret, 64-bit rotation counter), base64url; the
  counter moves every DPOP_NONCE_MAX_AGE / 3 (60 s); a server hands out the next one and
  accepts the previous, the current and the next;
- dpop/dpop-manager.ts (checkProof): one "DPoP" header; a JWT with typ "dpop+jwt", signed by
  the public "jwk" of its header with one of VERIFY_ALGOS; "iat" at most maxTokenAge (10 s)
  old with DPOP_NONCE_MAX_AGE (180 s) of clock tolerance (and "exp", if present, not past);
  "jti"; "htm" equal to the method; "htu" equal, without query and fragment, to the URL the
  server was asked (its public origin and the path); no nonce or an unknown one: use_dpop_nonce;
  "ath" = base64url(SHA-256(access token)) where an access token is presented, and no "ath"
  elsewhere; the proof's key thumbprint (RFC 7638, SHA-256) is its "jkt";
- oauth-verifier.ts (checkDpopProof) and replay/replay-manager.ts: a "jti" is refused for
  DPOP_NONCE_MAX_AGE x 1.1 after first use ("DPoP proof replayed");
- oauth-constants.ts: the numbers (settings in config.py).
"""

import hashlib
import hmac
import math
import posixpath
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import jose
from .oauth_errors import UseDpopNonce, invalid_dpop_proof

SECURITY_RATIO = 1.1  # replay-manager.ts: 10% extra time


@dataclass(frozen=True)
class Proof:
    jti: str
    jkt: str
    htm: str
    htu: str


class Nonces:
    """dpop-nonce.ts: nonces that rotate with the clock, from a secret."""

    def __init__(self):
        self.secret = secrets.token_bytes(32)

    def renew(self):
        """Every nonce handed out so far stops working (a new secret)."""
        self.secret = secrets.token_bytes(32)

    def _compute(self, counter):
        digest = hmac.new(self.secret, counter.to_bytes(8, "big", signed=True), hashlib.sha256)
        return jose.b64url(digest.digest())

    def next(self, now, rotation_s):
        return self._compute(math.floor(now / rotation_s) + 1)

    def check(self, nonce, now, rotation_s):
        counter = math.floor(now / rotation_s)
        return any(hmac.compare_digest(nonce, self._compute(counter + step)) for step in (-1, 0, 1))


class ReplayStore:
    """replay-store-memory.ts: a value is unique once per namespace until it expires."""

    def __init__(self):
        self.seen = {}  # (namespace, value) -> expires at
        self.inserts = 0

    def unique(self, namespace, value, ttl_s, now):
        key = (namespace, value)
        expires = self.seen.get(key)
        if expires is not None and expires > now:
            return False
        self.seen[key] = now + ttl_s
        self.inserts += 1
        if self.inserts % 1000 == 0:
            self.seen = {k: e for k, e in self.seen.items() if e > now}
        return True


def normalized_url(url):
    """origin + pathname of a URL, as WHATWG's URL prints them (scheme and host in lower case,
    the scheme's default port left out, dot segments resolved); None if it is no http(s) URL
    or carries credentials."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    path = parts.path or "/"
    resolved = posixpath.normpath(path) if path != "/" else "/"
    resolved = "/" + resolved.lstrip("/")
    if path.endswith("/") and not resolved.endswith("/"):
        resolved += "/"
    return f"{scheme}://{host}{resolved}"


def check_proof(proofs, method, url, access_token, nonces, config, now):
    """The proof of a request (None if it has none), or raise the reference's error.

    proofs: the values of the request's DPoP headers; url: the normalized URL it was sent to.
    """
    if not proofs:
        return None
    if len(proofs) > 1:
        raise invalid_dpop_proof("DPoP header must contain a single proof")
    proof = proofs[0]
    if not proof:
        raise invalid_dpop_proof("DPoP header cannot be empty")
    try:
        header = jose.protected_header(proof)
        key = jose.public_key(header.get("jwk"))
        header, claims = jose.verify(proof, key)
        jose.check_claims(
            header,
            claims,
            typ="dpop+jwt",
            max_token_age=config.oauth_dpop_max_age_s,
            clock_tolerance=config.oauth_dpop_clock_tolerance_s,
            now=now,
        )
    except jose.JoseError as error:
        raise invalid_dpop_proof(f"Failed to verify DPoP proof: {error.message}") from None
    nonce, jti, htm, htu = (claims.get(k) for k in ("nonce", "jti", "htm", "htu"))
    if nonce is not None and not isinstance(nonce, str):
        raise invalid_dpop_proof('Invalid DPoP "nonce" type')
    if not jti or not isinstance(jti, str):
        raise invalid_dpop_proof('DPoP "jti" missing')
    if not htm or htm != method:
        raise invalid_dpop_proof('DPoP "htm" mismatch')
    if not htu or not isinstance(htu, str):
        raise invalid_dpop_proof('Invalid DPoP "htu" type')
    proof_url = normalized_url(htu)
    if proof_url is None:
        raise invalid_dpop_proof('DPoP "htu" is not a valid URL')
    if proof_url != url:
        raise invalid_dpop_proof('DPoP "htu" mismatch')
    rotation = config.oauth_dpop_nonce_rotation_s
    if not nonce:
        raise UseDpopNonce()
    if not nonces.check(nonce, now, rotation):
        raise UseDpopNonce('DPoP "nonce" mismatch')
    ath = claims.get("ath")
    if access_token:
        expected = jose.b64url(hashlib.sha256(access_token.encode()).digest())
        if not isinstance(ath, str) or not hmac.compare_digest(ath, expected):
            raise invalid_dpop_proof('DPoP "ath" mismatch')
    elif ath is not None:
        raise invalid_dpop_proof('DPoP "ath" claim not allowed')
    return Proof(jti=jti, jkt=jose.thumbprint(key), htm=htm, htu=htu)


def replay_ttl_s(config):
    return math.ceil(config.oauth_dpop_clock_tolerance_s * SECURITY_RATIO)
