"""Settings shared by every environment; production.py and test.py build on these."""

from datetime import timedelta
from pathlib import Path

from .env import (
    env,
    env_choice,
    env_flag,
    env_int,
    env_list,
    env_test_networks,
    is_loopback_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent

SECRET_KEY = env("DJANGO_SECRET_KEY", required=True)
DEBUG = False
# The names a browser may use, from the inventory (roles/app: app_allowed_hosts).
# nginx forwards the Host the browser sent, port included, so a form posted to
# https://127.0.0.1:8443/ passes the CSRF origin check with no port listed here;
# CSRF_TRUSTED_ORIGINS only adds other origins allowed to post (none by default).
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "axes",
    # Staff's second factor for the admin (config/urls.py): a TOTP authenticator app.
    "django_otp",
    "django_otp.plugins.otp_totp",
    "core",
    "blocking",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into core.signin.locked_out.
    "axes.middleware.AxesMiddleware",
]

# The name an authenticator app shows beside a staff member's admin code.
OTP_TOTP_ISSUER = "Shoestring"

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "core.context_processors.demo_network",
                "core.context_processors.bluesky_signin",
            ],
        },
    },
]

# Postgres over TLS, for a database on a host of its own: libpq's sslmode, and the CA that
# signed the server's certificate, which verify-ca and verify-full check it against (checked
# below). verify-full also checks DATABASE_HOST against the certificate's name.
DATABASE_SSLMODE = env_choice(
    "DATABASE_SSLMODE", ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
)
DATABASE_SSLROOTCERT = env("DATABASE_SSLROOTCERT", "")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": env("DATABASE_NAME", "shoestring"),
        "USER": env("DATABASE_USER", "shoestring_web"),
        "PASSWORD": env("DATABASE_PASSWORD", ""),
        "HOST": env("DATABASE_HOST", "localhost"),
        "PORT": env_int("DATABASE_PORT", 5432),
        # Keep connections between requests: a new Postgres backend costs a
        # fork and several MiB.
        "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60),
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {
            "connect_timeout": 5,
            # libpq's own names; left out when unset, so libpq's defaults (prefer, and
            # ~/.postgresql/root.crt) apply as before.
            **({"sslmode": DATABASE_SSLMODE} if DATABASE_SSLMODE else {}),
            **({"sslrootcert": DATABASE_SSLROOTCERT} if DATABASE_SSLROOTCERT else {}),
        },
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# -- The front door (core.signin) ---------------------------------------------
# django-axes counts failed sign-ins per account and per client address (either one
# locks), in Postgres; a locked sign-in is refused, the right password too, for the
# cool-off after the last try. nginx's limit_req on the same POSTs is the outer wall.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("SHOESTRING_SIGNIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("SHOESTRING_SIGNIN_COOLOFF_MIN", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_CLIENT_IP_CALLABLE = "core.signin.client_ip"
AXES_LOCKOUT_CALLABLE = "core.signin.locked_out"
AXES_RESET_ON_SUCCESS = True
# Successful sign-ins are not written down: every row is a disk write on the IOPS budget.
AXES_DISABLE_ACCESS_LOG = True
# Each failure is logged with its client address; the username stays masked (people type
# passwords into it), `shoestring-manage axes_list_attempts` shows it.
AXES_SENSITIVE_PARAMETERS = ["username"]
# "Unblock everybody", unlinking and cancelling a campaign ask for the password again
# when the last sign-in is older than this.
FRESH_SIGN_IN_S = env_int("SHOESTRING_FRESH_SIGN_IN_S", 300)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = env("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles"))
# Hashed file names (site.3f2a9c1b7e4d.css): nginx caches them for a year, and a
# new release changes the name instead of waiting for caches to expire.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("DJANGO_LOG_LEVEL", "INFO")},
}

# The release this code runs as: roles/release writes its id to RELEASE beside
# app/ (/opt/shoestring/releases/<id>/RELEASE); /healthz reports it.
_RELEASE_FILE = BASE_DIR.parent / "RELEASE"
SHOESTRING_RELEASE = _RELEASE_FILE.read_text().strip() if _RELEASE_FILE.is_file() else "unreleased"

# -- The block service ---------------------------------------------------------
# The network. Production talks to the public Bluesky entryway.
BLUESKY_SERVICE_URL = env("BLUESKY_SERVICE_URL", "https://bsky.social")
BLUESKY_TIMEOUT_S = float(env("BLUESKY_TIMEOUT_S", "20"))
# An account's DID document names its PDS, which then gets the person's tokens: only public
# https servers qualify. A network on this machine's loopback (the fake Bluesky on test and
# demo hosts) names loopback PDSes, so they are allowed when BLUESKY_SERVICE_URL is one
# ("auto", the default), or when this is "true"; "false" never allows them.
BLUESKY_ALLOW_LOOPBACK_PDS = env_flag(
    "BLUESKY_ALLOW_LOOPBACK_PDS", auto=is_loopback_url(BLUESKY_SERVICE_URL)
)
# TEST NETWORKS ONLY: PDSes at addresses in these CIDRs (comma-separated, private ranges
# only) may get tokens over http too, as loopback ones may above: a multi-host test puts the
# fake Bluesky on a container of its own (say 172.30.0.10). Empty, the default, in production.
BLUESKY_ALLOW_PDS_NETWORK = env_test_networks("BLUESKY_ALLOW_PDS_NETWORK")
# Sign in with Bluesky (atproto OAuth, blocking.signin): the app's ES256 private key, a PEM
# base64-encoded onto one line (the play generates it into the deployment's secrets); empty:
# only app passwords link. Its public half is served at /oauth/jwks.json.
OAUTH_CLIENT_KEY = env("SHOESTRING_OAUTH_CLIENT_KEY", "")
# Where did:plc documents are read (handle -> DID -> PDS discovery).
BLUESKY_PLC_URL = env("BLUESKY_PLC_URL", "https://plc.directory")
# The AppView the PDS proxies app.bsky.* calls to: the audience of the app's rpc: scopes.
BLUESKY_APPVIEW_AUDIENCE = env("BLUESKY_APPVIEW_AUDIENCE", "did:web:api.bsky.app#bsky_appview")
# Bluesky's per-account write budget (points; creating a block record costs 3):
# what the campaign page's time estimate is computed from.
BLUESKY_WRITE_POINTS_PER_HOUR = env_int("BLUESKY_WRITE_POINTS_PER_HOUR", 5_000)
BLUESKY_WRITE_POINTS_PER_DAY = env_int("BLUESKY_WRITE_POINTS_PER_DAY", 35_000)
BLUESKY_POINTS_PER_BLOCK = 3
BLUESKY_POINTS_PER_UNBLOCK = 1
# Bluesky's per-address budget: every account's calls from one client address together (the
# PDS's "global-ip" limit). The workers behind an address share a token bucket in Postgres
# that keeps them under SHOESTRING_ADDRESS_BUDGET_SHARE of it in any window, and bulk work
# always leaves SHOESTRING_INTERACTIVE_RESERVE requests for the person waiting on one block.
BLUESKY_ADDRESS_REQUESTS_PER_WINDOW = env_int("BLUESKY_ADDRESS_REQUESTS_PER_WINDOW", 3_000)
BLUESKY_ADDRESS_WINDOW_S = env_int("BLUESKY_ADDRESS_WINDOW_S", 300)
# 97%: the bucket never lets any window exceed it, so the rest (90 requests in 5 minutes) is
# margin for how the network counts; 90% made 90% of the address's ceiling unreachable.
ADDRESS_BUDGET_SHARE = float(env("SHOESTRING_ADDRESS_BUDGET_SHARE", "0.97"))
INTERACTIVE_RESERVE = env_int("SHOESTRING_INTERACTIVE_RESERVE", 30)
# A task waits at most this long for the shared budget before handing its work back to
# beat (the wait is data, not a countdown).
ADDRESS_WAIT_S = float(env("SHOESTRING_ADDRESS_WAIT_S", "3"))
# The bucket this process takes from: the address its requests leave from, as Bluesky counts
# them. Every process behind one address (the pools of one host, hosts behind one NAT) names
# the same one and shares its budget; a worker host with an address of its own names its own
# and gets a budget of its own. "global-ip", the default, is the one box's.
EGRESS_ADDRESS = env("SHOESTRING_EGRESS_ADDRESS", "global-ip")

# The demo network (make demo): the app talks to the fake Bluesky on the host's
# loopback, and every page says so. The account and targets are the fake's
# seeded ones, shown to a newcomer so they can try the whole journey offline.
DEMO_NETWORK = env("SHOESTRING_DEMO_NETWORK", "") == "1"
DEMO_ACCOUNT_HANDLE = env("SHOESTRING_DEMO_ACCOUNT_HANDLE", "")
DEMO_ACCOUNT_APP_PASSWORD = env("SHOESTRING_DEMO_ACCOUNT_APP_PASSWORD", "")
DEMO_TARGETS = env_list("SHOESTRING_DEMO_TARGETS", "")
DEMO_POSTS = env_list("SHOESTRING_DEMO_POSTS", "")
# Fernet key that encrypts app passwords and session tokens at rest. Only the
# services that call the network get it (see docs/runbook.md).
SHOESTRING_CREDENTIALS_KEY = env("SHOESTRING_CREDENTIALS_KEY", "")

# Limits that keep spare capacity for whoever is being targeted right now.
FOLLOWER_CAP = env_int("SHOESTRING_FOLLOWER_CAP", 200_000)
TOKEN_BUCKET_CAPACITY = env_int("SHOESTRING_TOKEN_BUCKET_CAPACITY", 25_000)
TOKEN_BUCKET_REFILL_PER_HOUR = env_int("SHOESTRING_TOKEN_BUCKET_REFILL_PER_HOUR", 1_000)

# Paging: one task fetches a page of followers (API calls of 100) and queues the
# batches; the next page is released (by the batch that drains the last one, or
# by beat) once the person has less than a page of batches waiting and at least
# the delay has passed, so a huge account enters the queue in waves as small as
# the person's budget drains them. Read just in time: with the seed's 5,000 a
# page (50 calls) 10 minutes apart, every campaign's page went ahead of the
# batches it made, a newcomer's first block waited behind everyone's pages, and
# what was read but not yet blocked grew (docs/queues.md).
FOLLOWER_PAGE_SIZE = env_int("SHOESTRING_FOLLOWER_PAGE_SIZE", 400)
FOLLOWER_PAGE_DELAY_S = env_int("SHOESTRING_FOLLOWER_PAGE_DELAY_S", 0)
BLOCK_BATCH_SIZE = env_int("SHOESTRING_BLOCK_BATCH_SIZE", 200)
# How the next page is released after the pause: "beat" (a due time in the
# database, released by the periodic task) or "countdown" (a Celery countdown
# task a worker holds in memory until due: the seed's naive way, kept only so
# the benchmark can compare the two; see docs/benchmarks.md).
FOLLOWER_PAGE_RELEASE = env("SHOESTRING_FOLLOWER_PAGE_RELEASE", "beat")
# Watching a campaign's lists for newcomers (Campaign.watch): a newest-first poll this
# often, of at most this many pages of 100 a list, a full rescan this often (the
# AppView's order can be backdated), and for at most this long when the campaign has no
# end of its own.
WATCH_POLL_S = env_int("SHOESTRING_WATCH_POLL_S", 300)
WATCH_MAX_PAGES = env_int("SHOESTRING_WATCH_MAX_PAGES", 5)
WATCH_RESCAN_S = env_int("SHOESTRING_WATCH_RESCAN_S", 6 * 3600)
WATCH_MAX_S = env_int("SHOESTRING_WATCH_MAX_S", 28 * 86400)
# Tasks of one person in the broker or running at once; the rest wait as Batch rows.
MAX_IN_FLIGHT_PER_ACCOUNT = env_int("SHOESTRING_MAX_IN_FLIGHT_PER_ACCOUNT", 2)
# Network errors (5xx, timeouts) a batch may meet before it fails for good.
MAX_NETWORK_FAILURES = env_int("SHOESTRING_MAX_NETWORK_FAILURES", 8)
# The longest pause between tries of a batch after network errors.
MAX_BACKOFF_S = env_int("SHOESTRING_MAX_BACKOFF_S", 3600)
# The database or broker briefly away: the task tries again after this many seconds.
INFRA_RETRY_S = env_int("SHOESTRING_INFRA_RETRY_S", 3)
# Expired blocks undone per pass of the expiry task, and "unblock everybody" pace.
RELEASE_BATCH_LIMIT = env_int("SHOESTRING_RELEASE_BATCH_LIMIT", 500)
# A task that started a network write holds its rows this long; after that
# another may pick them up (after checking the network for what was done).
ACTION_LEASE_S = env_int("SHOESTRING_ACTION_LEASE_S", 300)
# Work still unfinished this long after it was queued is queued again.
STRANDED_AFTER_S = env_int("SHOESTRING_STRANDED_AFTER_S", 600)
# Batches queued before Postgres last started are queued again this long after the start
# (a crash can undo the commit that finished one; blocking.requeue_stranded).
STRANDED_AFTER_RESTART_S = env_int("SHOESTRING_STRANDED_AFTER_RESTART_S", 60)
# Postgres gone during the commit that queued batches: how long dispatch waits for it to
# come back and say whether they were queued (then it sends them) before leaving them to
# the stranded sweep.
UNSURE_COMMIT_WAIT_S = env_int("SHOESTRING_UNSURE_COMMIT_WAIT_S", 30)
# No task is scheduled further ahead than this: long waits are data (next_page_at,
# until) read by periodic tasks, never countdowns held by the broker or a worker
# (FOLLOWER_PAGE_RELEASE "countdown", the benchmark's naive host, breaks this on purpose).
MAX_COUNTDOWN_S = env_int("SHOESTRING_MAX_COUNTDOWN_S", 5)
RETRY_BASE_S = env_int("SHOESTRING_RETRY_BASE_S", 10)
KILL_SWITCH_RETRY_S = env_int("SHOESTRING_KILL_SWITCH_RETRY_S", 60)
PERIODIC_INTERVAL_S = float(env("SHOESTRING_PERIODIC_INTERVAL_S", "30"))

# -- Celery ----------------------------------------------------------------------
# Queues by latency: "interactive" is what a person waits on, "bulk" the pages
# and batches, "maintenance" expiry and clean-ups (docs/queues.md).
CELERY_BROKER_URL = env("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Longer than any countdown plus a task's time limit (checked below).
CELERY_VISIBILITY_TIMEOUT_S = env_int("CELERY_VISIBILITY_TIMEOUT_S", 3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT_S}
# On AWS the broker is SQS: CELERY_BROKER_URL="sqs://" takes the instance profile's
# credentials (or sqs://KEY:SECRET@host:port for a local SQS-compatible endpoint).
# One SQS queue per Celery queue, named with a per-deployment prefix.
CELERY_QUEUE_NAMES = ["interactive", "bulk", "maintenance"]
SQS_QUEUE_PREFIX = env("SHOESTRING_SQS_QUEUE_PREFIX", "shoestring-")
SQS_REGION = env("SHOESTRING_SQS_REGION", "us-east-1")
# Where the queues live, e.g. https://sqs.eu-west-1.amazonaws.com/123456789012/
SQS_QUEUE_URL_BASE = env("SHOESTRING_SQS_QUEUE_URL_BASE", "")
# Only for a local SQS-compatible server in tests; production uses AWS's endpoint.
SQS_ENDPOINT_URL = env("SHOESTRING_SQS_ENDPOINT_URL", "") or None
SQS_MAX_RECEIVE_COUNT = env_int("SHOESTRING_SQS_MAX_RECEIVE_COUNT", 10)
if CELERY_BROKER_URL.startswith("sqs://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "region": SQS_REGION,
        "visibility_timeout": CELERY_VISIBILITY_TIMEOUT_S,
        "wait_time_seconds": 20,  # long polling: fewer, cheaper requests
        # How long the consumer waits before it looks again after a poll that brought nothing,
        # and also after finding every prefetch slot taken (kombu's SQS transport treats both
        # alike). At 1 s a pool of 2 with prefetch 1 took about two tasks a second however
        # short they were (make bench-cluster, docs/benchmarks.md). Looking again costs no
        # request while the slots are full, and an empty queue is still long-polled, so a
        # tenth of a second costs no more SQS requests.
        "polling_interval": 0.1,
        "is_secure": not (SQS_QUEUE_URL_BASE.startswith("http://")),
        "predefined_queues": {
            name: {"url": f"{SQS_QUEUE_URL_BASE}{SQS_QUEUE_PREFIX}{name}"}
            for name in CELERY_QUEUE_NAMES
        },
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_DEFAULT_QUEUE = "interactive"
CELERY_TASK_ROUTES = {
    "blocking.start_campaign": {"queue": "interactive"},
    "blocking.fetch_follower_page": {"queue": "bulk"},
    "blocking.act_on_batch": {"queue": "bulk"},
    "blocking.undo_batch": {"queue": "bulk"},
    "blocking.revoke_grant": {"queue": "interactive"},
    "blocking.release_due_pages": {"queue": "maintenance"},
    "blocking.release_batches": {"queue": "maintenance"},
    "blocking.release_expired": {"queue": "maintenance"},
    "blocking.requeue_stranded": {"queue": "maintenance"},
}
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_BEAT_SCHEDULE = {
    "release-due-pages": {"task": "blocking.release_due_pages", "schedule": PERIODIC_INTERVAL_S},
    "release-batches": {"task": "blocking.release_batches", "schedule": PERIODIC_INTERVAL_S},
    "release-expired": {"task": "blocking.release_expired", "schedule": PERIODIC_INTERVAL_S},
    "requeue-stranded": {"task": "blocking.requeue_stranded", "schedule": PERIODIC_INTERVAL_S * 2},
}

if FOLLOWER_PAGE_RELEASE not in ("beat", "countdown"):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"SHOESTRING_FOLLOWER_PAGE_RELEASE must be beat or countdown, not {FOLLOWER_PAGE_RELEASE!r}"
    )
if not 1 <= BLOCK_BATCH_SIZE <= 200:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "SHOESTRING_BLOCK_BATCH_SIZE must be 1-200 (writes per applyWrites),"
        f" not {BLOCK_BATCH_SIZE}"
    )
if not (100 <= FOLLOWER_PAGE_SIZE <= 10_000 and 0 <= FOLLOWER_PAGE_DELAY_S <= 3600):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "SHOESTRING_FOLLOWER_PAGE_SIZE must be 100-10000 and SHOESTRING_FOLLOWER_PAGE_DELAY_S"
        f" 0-3600, not {FOLLOWER_PAGE_SIZE} and {FOLLOWER_PAGE_DELAY_S}"
    )
if DATABASE_SSLMODE in ("verify-ca", "verify-full") and not DATABASE_SSLROOTCERT:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"DATABASE_SSLMODE={DATABASE_SSLMODE} checks the server's certificate: set"
        " DATABASE_SSLROOTCERT to the CA certificate that signed it"
    )
if DATABASE_SSLROOTCERT and not Path(DATABASE_SSLROOTCERT).is_file():
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"DATABASE_SSLROOTCERT names {DATABASE_SSLROOTCERT}, which is not a file this process"
        " can see"
    )
if len(EGRESS_ADDRESS) > 255:  # blocking_addressbudget.name
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"SHOESTRING_EGRESS_ADDRESS must be at most 255 characters, not {len(EGRESS_ADDRESS)}"
    )
if (
    CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    <= MAX_COUNTDOWN_S + CELERY_TASK_TIME_LIMIT
):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "CELERY_VISIBILITY_TIMEOUT_S must exceed SHOESTRING_MAX_COUNTDOWN_S plus the task time"
        " limit, or the broker redelivers delayed tasks that are still waiting"
    )
