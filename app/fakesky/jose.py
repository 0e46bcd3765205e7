"""JOSE for the OAuth server: JWTs checked as the reference checks them with the `jose` library.

jwcrypto (Debian's python3-jwcrypto 1.1.0 on the hosts, the version requirements-dev.txt pins in
the tests) verifies and makes signatures and computes RFC 7638 thumbprints; this module only
chooses the key and checks the claims, with jose's messages, which the reference passes on
inside its errors. Checked against bluesky-social/atproto:
- packages/oauth/oauth-provider/src/lib/util/crypto.ts: VERIFY_ALGOS, what a DPoP proof or a
  client assertion may be signed with;
- jose's jwtVerify as the reference calls it (dpop/dpop-manager.ts, client/client.ts): "typ",
  the required claims, "iss", "sub", "aud", "iat", "nbf", "exp", maxTokenAge with its
  clockTolerance; createLocalJWKSet's choice of a key by "kid", "alg", "use" and "key_ops";
- packages/oauth/jwk/src/jwk.ts (jwkPubSchema): a client's public keys need a "kid".
"""

import json
import math
import time

from cryptography.hazmat.primitives import hashes
from jwcrypto import jwk, jws
from jwcrypto.common import JWException, base64url_decode, base64url_encode

VERIFY_ALGOS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES256K",
    "ES384",
    "ES512",
)
_ALG_KTY = {"RS": "RSA", "PS": "RSA", "ES": "EC"}
_ALG_CRV = {"ES256": "P-256", "ES256K": "secp256k1", "ES384": "P-384", "ES512": "P-521"}
_PRIVATE_MEMBERS = ("d", "k")  # jwk.ts isPrivateJwk: a private or shared secret


class JoseError(Exception):
    """A JWT that does not pass, with jose's message."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


def b64url(data):
    return base64url_encode(data)


def protected_header(token):
    """The protected header of a compact JWS, before any check of its signature."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise JoseError("Invalid Compact JWS")
    try:
        header = json.loads(base64url_decode(token.split(".", 1)[0]))
    except (ValueError, TypeError) as error:
        raise JoseError("Invalid Compact JWS") from error
    if not isinstance(header, dict):
        raise JoseError("Invalid Compact JWS")
    return header


def public_key(members):
    """A JWK (dict) as a verifying key; JoseError for a private, malformed or unusable one."""
    if not isinstance(members, dict):
        raise JoseError('"jwk" (JSON Web Key) Header Parameter must be a JSON object')
    if any(name in members for name in _PRIVATE_MEMBERS):
        raise JoseError('"jwk" (JSON Web Key) Header Parameter must be a public key')
    try:
        key = jwk.JWK(**members)
        key.get_op_key("verify")  # imports the key: a point off the curve fails here
    except (JWException, ValueError, TypeError, KeyError) as error:
        raise JoseError("Invalid JWK") from error
    return key


def verify(token, key, algorithms=VERIFY_ALGOS):
    """(header, claims) of a token whose signature this key makes; JoseError otherwise."""
    header = protected_header(token)
    alg = header.get("alg")
    if alg not in algorithms:
        raise JoseError('"alg" (Algorithm) Header Parameter value not allowed')
    signed = jws.JWS()
    signed.allowed_algs = list(algorithms)
    try:
        signed.deserialize(token)
        signed.verify(key, alg=alg)
        claims = json.loads(signed.payload)
    except (JWException, ValueError, TypeError) as error:
        raise JoseError("signature verification failed") from error
    if not isinstance(claims, dict):
        raise JoseError("JWT Claims Set must be a top-level JSON object")
    return header, claims


def check_claims(
    header,
    claims,
    *,
    typ=None,
    issuer=None,
    subject=None,
    audience=None,
    required=(),
    max_token_age=None,
    clock_tolerance=0,
    now=None,
):
    """jose's jwtVerify claim checks, in its order and with its messages."""
    if typ is not None and (
        not isinstance(header.get("typ"), str) or _typ(header["typ"]) != _typ(typ)
    ):
        raise JoseError('unexpected "typ" JWT header value')
    presence = list(required)
    for name, wanted in (
        ("iat", max_token_age),
        ("aud", audience),
        ("sub", subject),
        ("iss", issuer),
    ):
        if wanted is not None:
            presence.append(name)
    for name in dict.fromkeys(reversed(presence)):
        if name not in claims:
            raise JoseError(f'missing required "{name}" claim')
    if issuer is not None and claims.get("iss") not in _listed(issuer):
        raise JoseError('unexpected "iss" claim value')
    if subject is not None and claims.get("sub") != subject:
        raise JoseError('unexpected "sub" claim value')
    if audience is not None and not set(_listed(claims.get("aud"))) & set(_listed(audience)):
        raise JoseError('unexpected "aud" claim value')
    now = math.floor(time.time() if now is None else now)
    if ("iat" in claims or max_token_age is not None) and not _number(claims.get("iat")):
        raise JoseError('"iat" claim must be a number')
    if "nbf" in claims:
        if not _number(claims["nbf"]):
            raise JoseError('"nbf" claim must be a number')
        if claims["nbf"] > now + clock_tolerance:
            raise JoseError('"nbf" claim timestamp check failed')
    if "exp" in claims:
        if not _number(claims["exp"]):
            raise JoseError('"exp" claim must be a number')
        if claims["exp"] <= now - clock_tolerance:
            raise JoseError('"exp" claim timestamp check failed')
    if max_token_age is not None:
        age = now - claims["iat"]
        if age - clock_tolerance > max_token_age:
            raise JoseError('"iat" claim timestamp check failed (too far in the past)')
        if age < -clock_tolerance:
            raise JoseError('"iat" claim timestamp check failed (it should be in the past)')
    return claims


def select_key(keys, header):
    """The one key of a key set that can verify a token with this header, as jose's
    createLocalJWKSet picks it (kty from "alg", then "kid", "alg", "use", "key_ops", curve)."""
    alg = header.get("alg")
    kty = _ALG_KTY.get(str(alg)[:2]) if isinstance(alg, str) else None
    kid = header.get("kid")
    candidates = [
        members
        for members in keys
        if isinstance(members, dict)
        and members.get("kty") == kty
        and (not isinstance(kid, str) or members.get("kid") == kid)
        and (not isinstance(members.get("alg"), str) or members["alg"] == alg)
        and (not isinstance(members.get("use"), str) or members["use"] == "sig")
        and (not isinstance(members.get("key_ops"), list) or "verify" in members["key_ops"])
        and (alg not in _ALG_CRV or members.get("crv") == _ALG_CRV[alg])
    ]
    if not candidates:
        raise JoseError("no applicable key found in the JSON Web Key Set")
    if len(candidates) > 1:
        raise JoseError("multiple matching keys found in the JSON Web Key Set")
    return public_key(candidates[0])


def public_jwks(value):
    """The usable keys of a public key set (jwks.ts jwksPubSchema drops the others: no "kid",
    a private part, a key that does not parse); None when it is no {"keys": [...]} at all."""
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        return None
    usable = []
    for members in value["keys"]:
        if not isinstance(members, dict) or not isinstance(members.get("kid"), str):
            continue
        try:
            public_key(members)
        except JoseError:
            continue
        usable.append(members)
    return usable


def thumbprint(key, sha512=False):
    """RFC 7638 thumbprint, base64url (jose's calculateJwkThumbprint)."""
    return key.thumbprint(hashes.SHA512() if sha512 else hashes.SHA256())


def sign_hs256(secret, typ, claims):
    """A compact JWS of these claims, HS256 with this secret, as the reference PDS signs its
    OAuth access tokens (context.ts: its JWT secret, "HS256")."""
    key = jwk.JWK(kty="oct", k=base64url_encode(secret))
    signed = jws.JWS(json.dumps(claims, separators=(",", ":")).encode())
    signed.add_signature(key, alg="HS256", protected={"alg": "HS256", "typ": typ})
    return signed.serialize(compact=True)


def hs256_key(secret):
    return jwk.JWK(kty="oct", k=base64url_encode(secret))


def _typ(value):
    value = value.lower()
    return value[len("application/") :] if value.startswith("application/") else value


def _listed(value):
    return value if isinstance(value, list | tuple) else [value]


def _number(value):
    return isinstance(value, int | float) and not isinstance(value, bool)
