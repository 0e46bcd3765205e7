"""Every setting of the fake: Bluesky's own numbers by default, each one a command-line flag.

The numbers marked "Bluesky's" are the reference implementation's (bluesky-social/atproto,
files named per setting); docs/fakesky.md lists them. Window lengths are settings so that a
benchmark can compress an hour into seconds.
"""

import argparse
from dataclasses import MISSING, dataclass, field, fields, replace
from urllib.parse import urlsplit


def _setting(default, help_text):
    return field(default=default, metadata={"help": help_text})


@dataclass
class Config:
    public_url: str = _setting(
        "",
        "URL of this server as the didDoc names it (#atproto_pds); empty: http://HOST:PORT",
    )
    latency_ms: int = _setting(0, "added to every request, in milliseconds")
    rate_limits_enabled: bool = _setting(
        True, "apply the limits below (the reference PDS's PDS_RATE_LIMITS_ENABLED)"
    )
    # packages/pds/src/rate-limits.ts: "global-ip", every XRPC call of one client address.
    ip_requests_per_window: int = _setting(3000, "per client address, all accounts (Bluesky's)")
    ip_window_s: float = _setting(300.0, "window of the per-address limit (Bluesky's: 5 minutes)")
    # packages/pds/src/rate-limits.ts: "repo-write-hour" and "repo-write-day", per account.
    write_points_per_hour: int = _setting(5000, "write points per account (Bluesky's)")
    hour_window_s: float = _setting(3600.0, "window of the hourly write budget")
    write_points_per_day: int = _setting(35000, "write points per account (Bluesky's)")
    day_window_s: float = _setting(86400.0, "window of the daily write budget")
    # packages/pds/src/api/com/atproto/repo/applyWrites.ts: ratelimitPoints.
    create_points: int = _setting(3, "write points of a create (Bluesky's)")
    update_points: int = _setting(2, "write points of an update (Bluesky's)")
    delete_points: int = _setting(1, "write points of a delete (Bluesky's)")
    # packages/pds/src/api/com/atproto/server/createSession.ts.
    sessions_per_window: int = _setting(30, "createSession per identifier and address (Bluesky's)")
    session_window_s: float = _setting(300.0, "its window (Bluesky's: 5 minutes)")
    sessions_per_day: int = _setting(300, "createSession per identifier and address (Bluesky's)")
    session_day_window_s: float = _setting(86400.0, "its window (Bluesky's: a day)")
    # packages/pds/src/account-manager/account-manager.ts login(): against timing attacks.
    login_min_ms: int = _setting(350, "createSession answers no sooner (Bluesky's: 350 ms)")
    # packages/pds/src/account-manager/helpers/auth.ts and account-manager.ts.
    access_token_ttl_s: float = _setting(7200.0, "access token lifetime (Bluesky's: 120 minutes)")
    refresh_token_ttl_s: float = _setting(7776000.0, "refresh token lifetime (Bluesky's: 90 days)")
    refresh_grace_s: float = _setting(
        7200.0, "a used refresh token still works this long (Bluesky's: 2 hours)"
    )
    # packages/pds/src/api/com/atproto/repo/applyWrites.ts: "Too many writes. Max: 200".
    max_writes_per_call: int = _setting(200, "operations per applyWrites (Bluesky's)")
    # The AppView indexes the firehose: a write shows in viewer state this much later.
    indexing_delay_s: float = _setting(2.0, "seconds before the AppView shows a block or mute")
    # packages/bsky/src/api/util.ts fillPage: DEFAULT_FILL_PAGE_MAX_REQUESTS.
    fill_page_max_requests: int = _setting(
        10, "reads of the follow list to refill a filtered page (Bluesky's; 1: no refill)"
    )
    # OAuth (oauth.py). The numbers are packages/oauth/oauth-provider/src/oauth-constants.ts's
    # unless said.
    appview_did: str = _setting(
        "did:web:api.bsky.app",
        "service DID of the fake's AppView: app.bsky.* calls need rpc:<method>?aud=<this>"
        "#bsky_appview (Bluesky's AppView's DID)",
    )
    oauth_authorize_url: str = _setting(
        "",
        "authorization_endpoint advertised (any origin; the page is also served at this path);"
        " empty: <issuer>/oauth/authorize",
    )
    oauth_granular_scopes: bool = _setting(
        True, "accept repo:, rpc:, account:, identity:, blob: scopes (false: an older PDS)"
    )
    oauth_allow_loopback_clients: bool = _setting(
        False,
        "TEST ONLY: accept client_ids, client_uri and redirect URIs on localhost, 127.0.0.1,"
        " [::1] (http too) and .test names, any port (the reference refuses them)",
    )
    oauth_client_fetch_via: str = _setting(
        "",
        "TEST ONLY: fetch client metadata and JWKS from this http(s)://host:port, keeping the"
        " client_id's Host, without checking TLS certificates",
    )
    # packages/oauth/internal/fetch-node/src/safe.ts (timeout) and pds/src/config/config.ts.
    oauth_client_fetch_timeout_s: float = _setting(10.0, "client document fetch (Bluesky's)")
    oauth_client_max_bytes: int = _setting(524288, "largest client document (Bluesky's 512 kB)")
    # oauth-provider.ts clientMetadataCache / clientJwksCache: ttl 600e3.
    oauth_client_cache_s: float = _setting(600.0, "client metadata and JWKS cache (Bluesky's)")
    oauth_access_token_ttl_s: float = _setting(
        3600.0, "OAuth access token lifetime (Bluesky's TOKEN_MAX_AGE: 60 minutes)"
    )
    oauth_par_ttl_s: float = _setting(300.0, "pushed request lifetime (PAR_EXPIRES_IN: 5 min)")
    oauth_authorization_inactivity_s: float = _setting(
        300.0, "open page and code lifetime (AUTHORIZATION_INACTIVITY_TIMEOUT: 5 min)"
    )
    oauth_public_session_s: float = _setting(
        1209600.0, "public client session (SESSION_LIFETIME: 2 weeks)"
    )
    oauth_public_refresh_s: float = _setting(
        1209600.0, "public client, longest time between refreshes (REFRESH_LIFETIME: 2 weeks)"
    )
    oauth_confidential_session_s: float = _setting(
        63115200.0, "confidential client session (SESSION_LIFETIME_EXTENDED: 2 years)"
    )
    oauth_confidential_refresh_s: float = _setting(
        7889400.0, "confidential client, between refreshes (REFRESH_LIFETIME_EXTENDED: 3 months)"
    )
    # dpop/dpop-nonce.ts: DPOP_NONCE_MAX_AGE / 3; dpop-manager.ts: maxTokenAge 10,
    # clockTolerance DPOP_NONCE_MAX_AGE (180 s).
    oauth_dpop_nonce_rotation_s: float = _setting(
        60.0, "DPoP nonce rotation; the previous and next are accepted (Bluesky's: 60 s)"
    )
    oauth_dpop_max_age_s: float = _setting(10.0, "DPoP proof iat max age (Bluesky's: 10 s)")
    oauth_dpop_clock_tolerance_s: float = _setting(
        180.0, "DPoP proof clock tolerance (Bluesky's: 180 s)"
    )
    oauth_client_assertion_max_age_s: float = _setting(
        60.0, "client assertion iat max age (CLIENT_ASSERTION_MAX_AGE: 60 s)"
    )

    def validate(self):
        """Raise ValueError naming the first setting out of range."""
        for name in (
            "ip_window_s",
            "hour_window_s",
            "day_window_s",
            "session_window_s",
            "session_day_window_s",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 second")
        for name in (
            "ip_requests_per_window",
            "write_points_per_hour",
            "write_points_per_day",
            "sessions_per_window",
            "sessions_per_day",
            "max_writes_per_call",
            "fill_page_max_requests",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in (
            "latency_ms",
            "login_min_ms",
            "indexing_delay_s",
            "create_points",
            "update_points",
            "delete_points",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.access_token_ttl_s <= 0 or self.refresh_token_ttl_s <= 0:
            raise ValueError("token lifetimes must be positive")
        self._validate_oauth()
        return self

    def _validate_oauth(self):
        for name in (
            "oauth_client_fetch_timeout_s",
            "oauth_client_max_bytes",
            "oauth_access_token_ttl_s",
            "oauth_par_ttl_s",
            "oauth_authorization_inactivity_s",
            "oauth_public_session_s",
            "oauth_public_refresh_s",
            "oauth_confidential_session_s",
            "oauth_confidential_refresh_s",
            "oauth_dpop_max_age_s",
            "oauth_client_assertion_max_age_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("oauth_client_cache_s", "oauth_dpop_clock_tolerance_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        # dpop-nonce.ts rotationIntervalSchema: 1 s to DPOP_NONCE_MAX_AGE / 3.
        if not 1 <= self.oauth_dpop_nonce_rotation_s <= 60:
            raise ValueError("oauth_dpop_nonce_rotation_s must be 1-60 seconds")
        for name in ("public_url", "oauth_authorize_url", "oauth_client_fetch_via"):
            value = getattr(self, name)
            parts = urlsplit(value)
            if value and (parts.scheme not in ("http", "https") or not parts.hostname):
                raise ValueError(f"{name} must be an http(s) URL")
        if self.oauth_client_fetch_via and urlsplit(self.oauth_client_fetch_via).path not in (
            "",
            "/",
        ):
            raise ValueError("oauth_client_fetch_via is an origin: http(s)://host:port")
        if not self.appview_did.startswith("did:"):
            raise ValueError("appview_did must be a DID")

    def update(self, values):
        """Set settings from JSON or command-line values; ValueError for an unknown one."""
        known = {f.name: f for f in fields(self)}
        candidate = replace(self)
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown setting {name}")
            setattr(candidate, name, _convert(known[name].type, value))
        candidate.validate()
        for name in values:
            setattr(self, name, getattr(candidate, name))
        return self


def _convert(kind, value):
    if kind is bool:
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"not a boolean: {value}")
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"not an integer: {value}")
    return kind(value)


def add_arguments(parser: argparse.ArgumentParser):
    """One flag per setting: --write-points-per-hour 5000, --no-rate-limits-enabled, ..."""
    for setting in fields(Config):
        flag = "--" + setting.name.replace("_", "-")
        default = setting.default if setting.default is not MISSING else None
        help_text = f"{setting.metadata.get('help', '')} (default: {default})"
        kind = setting.type
        if kind is bool:
            parser.add_argument(
                flag,
                dest=setting.name,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=help_text,
            )
        else:
            parser.add_argument(flag, dest=setting.name, type=kind, default=default, help=help_text)


def from_arguments(args):
    values = {setting.name: getattr(args, setting.name) for setting in fields(Config)}
    return Config(**values).validate()
