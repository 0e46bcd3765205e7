"""atproto OAuth scopes: the grammar, what a granted scope allows, the scope a refusal names.

Checked against bluesky-social/atproto packages/oauth/oauth-scopes/src/:
- atproto-oauth-scope.ts: "atproto", "transition:email", "transition:generic",
  "transition:chat.bsky", and account:, blob:, identity:, include:, repo:, rpc: scopes whose
  parameters parse (isAtprotoOauthScope); anything else is not an atproto scope;
- lib/syntax-string.ts, lib/parser.ts: PREFIX[:POSITIONAL][?NAME=VALUE&...], the positional
  value percent-decoded, the query as application/x-www-form-urlencoded; a parameter named and
  positional at once, an unknown parameter, a single one given twice, an empty list: no scope;
  formatting (the scope a refusal names) encodes like encodeURIComponent and URLSearchParams,
  then writes ":", "/", "+", ",", "@" and "%" back plainly;
- scopes/repo-permission.ts (collection: NSIDs or "*"; action: create, update, delete, all
  three by default), scopes/rpc-permission.ts (lxm: NSIDs or "*"; aud: a did:plc/did:web with a
  #fragment, or "*"; never both "*"), account-, identity-, blob-permission.ts, include-scope.ts;
- scope-permissions-transition.ts: "transition:generic" allows every repo write, every blob and
  every rpc call but chat.bsky.*; "transition:chat.bsky" allows chat.bsky.*;
- packages/syntax/src/nsid.ts (validateNsidRegex), packages/did/src/atproto.ts
  (isAtprotoDidRefAbsolute), did-ref.ts, lib/uri.ts (isFragment).
"""

import re
from urllib.parse import parse_qsl, quote, unquote

from .oauth_errors import ScopeMissing

STATIC_SCOPES = ("atproto", "transition:email", "transition:generic", "transition:chat.bsky")
GRANULAR_PREFIXES = ("account", "blob", "identity", "include", "repo", "rpc")
REPO_ACTIONS = ("create", "update", "delete")
ACCOUNT_ATTRIBUTES = ("email", "repo", "status")
ACCOUNT_ACTIONS = ("read", "manage")
IDENTITY_ATTRIBUTES = ("handle", "*")

_NSID = re.compile(
    r"^[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}"
    r"[a-zA-Z0-9])?)+(?:\.[a-zA-Z](?:[a-zA-Z0-9]{0,62})?)$"
)
_DID_PLC = re.compile(r"^did:plc:[a-z2-7]{24}$")
_DID_WEB = re.compile(r"^did:web:[a-zA-Z0-9._%-]+$")  # one segment: no path (atproto.ts)
_PCT = re.compile(r"%(?![0-9a-fA-F]{2})")
_FRAGMENT = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9a-fA-F]{2})+$")
# What URLSearchParams leaves as it is; a space becomes "+".
_FORM_SAFE = frozenset(b"*-._0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_WRITTEN_PLAIN = {"%3A": ":", "%2F": "/", "%2B": "+", "%2C": ",", "%40": "@", "%25": "%"}


def is_nsid(value):
    return isinstance(value, str) and 5 <= len(value) <= 317 and bool(_NSID.match(value))


def is_atproto_did(value):
    if not isinstance(value, str):
        return False
    if _DID_PLC.match(value):
        return True
    if not _DID_WEB.match(value) or _PCT.search(value):
        return False
    msid = value[len("did:web:") :]
    # A port (an encoded colon) only for localhost.
    return "%3A" not in msid.upper() or msid.lower().startswith("localhost%3a")


def is_atproto_did_ref(value):
    """did.ts isDidRefAbsolute + atproto.ts: "<did:plc or did:web>#<fragment>"."""
    if not isinstance(value, str) or value.count("#") != 1:
        return False
    did, fragment = value.split("#")
    return bool(fragment) and bool(_FRAGMENT.match(fragment)) and is_atproto_did(did)


def _is_accept(value):
    if value == "*/*":
        return True
    if value.count("/") != 1 or " " in value:
        return False
    head, tail = value.split("/")
    if not head or not tail:
        return False
    return "*" not in value or (value.endswith("/*") and "*" not in head)


# name -> (multiple, required, validate, default)
_SCHEMAS = {
    "repo": (
        "collection",
        {
            "collection": (True, True, lambda v: v == "*" or is_nsid(v), None),
            "action": (True, False, lambda v: v in REPO_ACTIONS, REPO_ACTIONS),
        },
    ),
    "rpc": (
        "lxm",
        {
            "lxm": (True, True, lambda v: v == "*" or is_nsid(v), None),
            "aud": (False, True, lambda v: v == "*" or is_atproto_did_ref(v), None),
        },
    ),
    "account": (
        "attr",
        {
            "attr": (False, True, lambda v: v in ACCOUNT_ATTRIBUTES, None),
            "action": (True, False, lambda v: v in ACCOUNT_ACTIONS, ("read",)),
        },
    ),
    "identity": ("attr", {"attr": (False, True, lambda v: v in IDENTITY_ATTRIBUTES, None)}),
    "blob": ("accept", {"accept": (True, True, _is_accept, None)}),
    "include": (
        "nsid",
        {
            "nsid": (False, True, is_nsid, None),
            "aud": (False, False, is_atproto_did_ref, None),
        },
    ),
}


def _syntax(scope, prefix):
    """(positional or None, [(name, value)]) of a scope string for this prefix, else None."""
    if len(scope) > len(prefix):
        if scope[len(prefix)] not in ":?" or not scope.startswith(prefix):
            return None
    elif scope != prefix:
        return None
    query_at, colon_at = scope.find("?"), scope.find(":")
    positional = None
    if colon_at != -1 and (query_at == -1 or colon_at < query_at):
        raw = scope[colon_at + 1 : query_at] if query_at != -1 else scope[colon_at + 1 :]
        if _PCT.search(raw):
            return None  # decodeURIComponent throws
        positional = unquote(raw, errors="strict")
    params = []
    if query_at != -1 and query_at < len(scope) - 1:
        params = parse_qsl(scope[query_at + 1 :], keep_blank_values=True)
    return positional, params


def parse(scope, prefix):
    """The parameters of a scope of this prefix as lists/strings, or None if it is not one."""
    try:
        syntax = _syntax(scope, prefix)
    except UnicodeDecodeError:
        return None
    if syntax is None:
        return None
    positional, params = syntax
    positional_name, schema = _SCHEMAS[prefix]
    if any(name not in schema for name, _ in params):
        return None
    result = {}
    for name, (multiple, required, validate, default) in schema.items():
        values = [value for key, value in params if key == name]
        if values:
            if name == positional_name and positional is not None:
                return None
            if not multiple and len(values) > 1:
                return None
            if not all(validate(v) for v in values):
                return None
            result[name] = values if multiple else values[0]
        elif name == positional_name and positional is not None:
            if not validate(positional):
                return None
            result[name] = [positional] if multiple else positional
        elif required:
            return None
        else:
            result[name] = list(default) if multiple and default else default
    if prefix == "rpc" and result["aud"] == "*" and "*" in result["lxm"]:
        return None  # rpc-permission.ts: rpc:*?aud=* is forbidden
    return result


def is_atproto_scope(value):
    return value in STATIC_SCOPES or any(parse(value, p) is not None for p in GRANULAR_PREFIXES)


def is_granular(value):
    return any(parse(value, p) is not None for p in GRANULAR_PREFIXES)


def _form_encode(text):
    out = []
    for byte in text.encode():
        if byte in _FORM_SAFE:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def _written_plain(text):
    return re.sub(r"%[0-9A-F]{2}", lambda m: _WRITTEN_PLAIN.get(m.group(0), m.group(0)), text)


def format_scope(prefix, positional, params):
    """ScopeStringSyntax.toString: the scope string the reference writes."""
    scope = prefix
    if positional is not None:
        scope += ":" + _written_plain(quote(positional, safe="!*'()"))
    if params:
        scope += "?" + _written_plain(
            "&".join(f"{_form_encode(k)}={_form_encode(v)}" for k, v in params)
        )
    return scope


def repo_scope_needed(collection, action):
    return format_scope("repo", collection, [("action", action)])


def rpc_scope_needed(lxm, aud):
    return format_scope("rpc", lxm, [("aud", aud)])


class Permissions:
    """What an OAuth token's scope allows (ScopePermissionsTransition)."""

    def __init__(self, scope):
        self.scopes = set(scope.split(" ")) if scope else set()

    def has(self, value):
        return value in self.scopes

    def allows_repo(self, collection, action):
        if "transition:generic" in self.scopes:
            return True
        for scope in self.scopes:
            found = parse(scope, "repo")
            if (
                found
                and action in found["action"]
                and ("*" in found["collection"] or collection in found["collection"])
            ):
                return True
        return False

    def allows_rpc(self, lxm, aud):
        generic = "transition:generic" in self.scopes
        if generic and (lxm == "*" or not lxm.startswith("chat.bsky.")):
            return True
        if "transition:chat.bsky" in self.scopes and lxm.startswith("chat.bsky."):
            return True
        for scope in self.scopes:
            found = parse(scope, "rpc")
            if (
                found
                and found["aud"] in ("*", aud)
                and ("*" in found["lxm"] or lxm in found["lxm"])
            ):
                return True
        return False

    def assert_repo(self, collection, action):
        if not self.allows_repo(collection, action):
            raise ScopeMissing(repo_scope_needed(collection, action))

    def assert_rpc(self, lxm, aud):
        if not self.allows_rpc(lxm, aud):
            raise ScopeMissing(rpc_scope_needed(lxm, aud))


def describe(scope):
    """The scope in words, for the authorize page."""
    words = {
        "atproto": "Know who you are (your DID and handle)",
        "transition:generic": (
            "Act as you almost everywhere, like an app password: read and write your data"
            " (not your direct messages)"
        ),
        "transition:chat.bsky": "Read and send your direct messages",
        "transition:email": "See your email address",
    }
    if scope in words:
        return words[scope]
    found = parse(scope, "repo")
    if found:
        what = "any collection" if "*" in found["collection"] else ", ".join(found["collection"])
        return f"{', '.join(a.capitalize() for a in found['action'])} records of {what}"
    found = parse(scope, "rpc")
    if found:
        calls = "any method" if "*" in found["lxm"] else ", ".join(found["lxm"])
        where = "any service" if found["aud"] == "*" else found["aud"]
        return f"Call {calls} at {where} as you"
    found = parse(scope, "account")
    if found:
        return f"{' and '.join(found['action']).capitalize()} your account's {found['attr']}"
    found = parse(scope, "identity")
    if found:
        return "Change your identity" if found["attr"] == "*" else "Change your handle"
    found = parse(scope, "blob")
    if found:
        return f"Upload files ({', '.join(found['accept'])})"
    found = parse(scope, "include")
    if found:
        return f"The permission set {found['nsid']}"
    return scope
