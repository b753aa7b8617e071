"""Stepworks settings: one module, every value read from the environment.

Embedded defaults (no variable set) give a laptop install: SQLite in WAL mode under
STEPWORKS_DATA_DIR, dramatiq's in-process broker, artifacts in a folder. DATABASE_URL,
BROKER_URL and STEPWORKS_ARTIFACTS_BACKEND scale it out. Every variable is listed in the
README's configuration table.
"""

import os
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

from runs_app.executor import sandbox

# ModelAdmin[Module] and friends at run time, as the type checker reads them.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)

# A relative data folder resolves against the project folder, never the current directory.
DATA_DIR = Path(env.str("STEPWORKS_DATA_DIR", default="var"))
if not DATA_DIR.is_absolute():
    DATA_DIR = BASE_DIR / DATA_DIR
DATA_DIR.mkdir(parents=True, exist_ok=True)

DATABASE_URL = env.str("DATABASE_URL", default="")
BROKER_URL = env.str("BROKER_URL", default="")


def _local_secret_key(data_dir: Path) -> str:
    """Read the laptop's secret key, creating it once (O_EXCL: two processes agree on one)."""
    path = data_dir / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text().strip()
        if key:
            return key
        raise ImproperlyConfigured(f"{path} is empty; delete it to generate a new key") from None
    with os.fdopen(fd, "w") as handle:
        key = secrets.token_urlsafe(50)
        handle.write(key)
    return key


SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if DATABASE_URL and not DEBUG:
        # A shared database means a deployment: its key must be set, not invented per machine.
        raise ImproperlyConfigured("SECRET_KEY must be set when DATABASE_URL is set")
    SECRET_KEY = _local_secret_key(DATA_DIR)

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# django_dramatiq first: an actor imported before it would bind to dramatiq's default broker.
INSTALLED_APPS = [
    "django_dramatiq",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "axes",
    "csp",
    "workspaces",
    "artifacts",
    "pipelines_app",
    "runs_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "workspaces.middleware.DomainErrorPages",
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database ---------------------------------------------------------------------------
if DATABASE_URL:
    DATABASES = {"default": env.db_url("DATABASE_URL")}
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "stepworks.sqlite3",
            "OPTIONS": {
                # IMMEDIATE takes the write lock at BEGIN, so two writers queue on the busy
                # timeout instead of failing with "database is locked" on upgrade.
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # The in-memory test database fails with "table is locked" once a worker thread
            # writes; a file in a temp folder does not.
            "TEST": {"NAME": str(Path(tempfile.gettempdir()) / f"stepworks-test-{os.getpid()}.db")},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"

# --- login throttling (django-axes): the login page and the admin's ------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out user and address
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("STEPWORKS_LOGIN_FAILURES", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("STEPWORKS_LOGIN_LOCKOUT_MINUTES", default=15))
# A lockout is per user name *and* address: a stranger cannot lock a colleague out from
# elsewhere, and one address cannot try one account forever.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
LOGIN_REDIRECT_URL = "pipelines:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- static files and artifacts -----------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# plotly.js is not copied into static/: it is the installed plotly package's own bundle,
# found as vendor/plotly.min.js (config/staticfiles.py).
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "config.staticfiles.PlotlyFinder",
]
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every request without it

ARTIFACTS_BACKEND = env.str("STEPWORKS_ARTIFACTS_BACKEND", default="filesystem")
ARTIFACTS_ROOT = Path(env.str("STEPWORKS_ARTIFACTS_ROOT", default=str(DATA_DIR / "artifacts")))
if ARTIFACTS_BACKEND == "filesystem":
    _artifact_storage = {
        "BACKEND": "artifacts.store.AtomicFileSystemStorage",
        "OPTIONS": {"location": str(ARTIFACTS_ROOT)},
    }
elif ARTIFACTS_BACKEND == "s3":
    # django-storages over boto3 (artifacts/s3.py). Credentials come the usual AWS way:
    # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN), a profile, or the
    # machine's role; boto3 needs a region even for MinIO.
    _artifact_storage = {
        "BACKEND": "artifacts.s3.ArtifactS3Storage",
        "OPTIONS": {
            "bucket_name": env.str("STEPWORKS_S3_BUCKET"),
            "endpoint_url": env.str("STEPWORKS_S3_ENDPOINT_URL", default=None),
            "region_name": env.str(
                "STEPWORKS_S3_REGION", default=env.str("AWS_DEFAULT_REGION", default="us-east-1")
            ),
            "location": env.str("STEPWORKS_S3_PREFIX", default="artifacts"),
            "presigned": env.bool("STEPWORKS_S3_PRESIGNED", default=False),
            "presigned_expires_s": env.int("STEPWORKS_S3_PRESIGNED_EXPIRES_S", default=60),
            "presigned_endpoint_url": env.str("STEPWORKS_S3_PUBLIC_ENDPOINT_URL", default=None),
        },
    }
else:
    raise ImproperlyConfigured(
        f"STEPWORKS_ARTIFACTS_BACKEND must be 'filesystem' or 's3', not {ARTIFACTS_BACKEND!r}"
    )

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "artifacts": _artifact_storage,
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
MEDIA_ROOT = DATA_DIR / "media"

# Uploads over this size are refused before the body is read (the API; a dataset upload has
# its own limit, STEPWORKS_DATASET_MAX_BYTES, checked the same way).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("STEPWORKS_MAX_UPLOAD_BYTES", default=50 * 1024 * 1024)
# An uploaded file past this goes to a temp file as it arrives, never into memory (a dataset
# upload goes to a temp file whatever its size: pipelines_app.uploads).
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_HANDLERS = [
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]

# --- mail (invites): off unless EMAIL_URL is set, e.g. smtp+tls://user:password@host:587 -----
EMAIL_URL = env.str("EMAIL_URL", default="")
if EMAIL_URL:
    vars().update(env.email_url("EMAIL_URL"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="stepworks@localhost")

# --- security -------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
HTTPS = env.bool("STEPWORKS_HTTPS", default=False)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS and env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
# Domain-wide decisions, so off unless the operator opts in (README, "check --deploy").
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None

# --- Content-Security-Policy (django-csp) on every response ---------------------------------
# No inline script anywhere: page scripts are static files, chart data is in json_script
# blocks (not executed). Styles may be inline: plotly injects its own <style> elements.
# The artifact frame sets a stricter policy of its own (artifacts.http.FRAME_CSP).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "frame-src": ["'self'"],
        "worker-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first, so an anonymous API call gets 401 with a WWW-Authenticate header.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "workspaces.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "workspaces.errors.api_exception_handler",
}

# API tokens: django-rest-knox, hashed at rest, several named ones per user, each with an
# expiry (workspaces.tokens). The header stays `Authorization: Token <key>`.
KNOX_TOKEN_MODEL = "workspaces.ApiToken"
# knox's own AuthToken is swapped out for ours, but knox's migrations would still create its
# table (their historical model is not swappable), a table no model names: PostgreSQL then
# refuses to flush auth_user past its foreign key. Without migrations, knox makes no table.
MIGRATION_MODULES = {"knox": None}
REST_KNOX = {
    "AUTH_HEADER_PREFIX": "Token",
    "TOKEN_TTL": timedelta(days=env.int("STEPWORKS_TOKEN_DAYS", default=90)),
    "TOKEN_PREFIX": "sw_",  # so a leaked token is recognisable (secret scanners, logs)
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Stepworks API",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- dramatiq -------------------------------------------------------------------------------
# Redis' consumer backs off to this idle poll (ms), low so that a lost wake-up (see
# runs_app/brokers.py) holds the first message after a pause back little. rundramatiq passes
# the environment on to its worker processes.
os.environ.setdefault("dramatiq_worker_timeout", "100")

QUEUE_PREFIX = env.str("STEPWORKS_QUEUE_PREFIX", default="stepworks")
_dramatiq_middleware = [
    "dramatiq.middleware.AgeLimit",
    "dramatiq.middleware.TimeLimit",
    "dramatiq.middleware.Retries",
    "django_dramatiq.middleware.DbConnectionsMiddleware",
    "runs_app.lifecycle.WorkerServicesMiddleware",
]
if BROKER_URL.startswith(("redis://", "rediss://")):
    DRAMATIQ_BROKER = {
        # dramatiq's, with idle consumers woken by the next message (runs_app/brokers.py)
        "BROKER": "runs_app.brokers.RedisBroker",
        "OPTIONS": {"url": BROKER_URL, "namespace": QUEUE_PREFIX},
        "MIDDLEWARE": _dramatiq_middleware,
    }
elif BROKER_URL.startswith(("amqp://", "amqps://")):
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.rabbitmq.RabbitmqBroker",
        "OPTIONS": {"url": BROKER_URL},
        "MIDDLEWARE": _dramatiq_middleware,
    }
elif BROKER_URL:
    raise ImproperlyConfigured("BROKER_URL must start with redis:// or amqp://")
else:
    # Embedded: an in-process broker; worker threads in the serving process consume it.
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.stub.StubBroker",
        "OPTIONS": {},
        "MIDDLEWARE": _dramatiq_middleware,
    }
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks"]

# --- engine intervals and limits (tests shorten them) -----------------------------------------
STEPWORKS = {
    "HEARTBEAT_S": env.float("STEPWORKS_HEARTBEAT_S", default=2.0),
    "LEASE_S": env.float("STEPWORKS_LEASE_S", default=15.0),
    "REAPER_S": env.float("STEPWORKS_REAPER_S", default=5.0),
    "EMBEDDED_POLL_S": env.float("STEPWORKS_EMBEDDED_POLL_S", default=0.2),
    "EMBEDDED_WORKERS": env.int("STEPWORKS_EMBEDDED_WORKERS", default=2),
    # The queues a step's `resources: {queue: ...}` may name (each a dramatiq queue
    # `<STEPWORKS_QUEUE_PREFIX>.<name>`; `rundramatiq --queues` picks what a machine serves).
    "QUEUES": env.list("STEPWORKS_QUEUES", default=[]),
    # Fair sharing: at most this many steps of one workspace run at once (0: no cap).
    "MAX_RUNNING_STEPS_PER_WORKSPACE": env.int(
        "STEPWORKS_MAX_RUNNING_STEPS_PER_WORKSPACE", default=0
    ),
    "STEP_TIMEOUT_S": env.float("STEPWORKS_STEP_TIMEOUT_S", default=3600.0),
    "MAX_ATTEMPTS": env.int("STEPWORKS_MAX_ATTEMPTS", default=3),
    "LOG_MAX_BYTES": env.int("STEPWORKS_LOG_MAX_BYTES", default=10 * 1024 * 1024),
    "SWEEP_MAX_RUNS": env.int("STEPWORKS_SWEEP_MAX_RUNS", default=1000),
    "SWEEP_INLINE_S": env.float("STEPWORKS_SWEEP_INLINE_S", default=0.5),
    "MAX_SOURCE_BYTES": env.int("STEPWORKS_MAX_SOURCE_BYTES", default=5 * 1024 * 1024),
    # Step isolation (README, "Step isolation"): `required` wherever the kernel offers it.
    "STEP_SANDBOX": env.str("STEPWORKS_STEP_SANDBOX", default=sandbox.default_mode()),
    "STEP_NETWORK": env.str("STEPWORKS_STEP_NETWORK", default="allow"),
    "STEP_READ_DIRS": env.list("STEPWORKS_STEP_READ_DIRS", default=[]),
    "STEP_WRITE_DIRS": env.list("STEPWORKS_STEP_WRITE_DIRS", default=[]),
    "GC_S": env.float("STEPWORKS_GC_S", default=3600.0),  # 0: only `manage.py gc`
    # A step's retries and their first backoff when its spec says none (pipelines_app.specs).
    "STEP_RETRIES": env.int("STEPWORKS_STEP_RETRIES", default=0),
    "STEP_RETRY_BACKOFF_S": env.float("STEPWORKS_STEP_RETRY_BACKOFF_S", default=10.0),
    # On SIGTERM a worker lets its running steps finish this long, then gives them back.
    "DRAIN_S": env.float("STEPWORKS_DRAIN_S", default=30.0),
    # A worker silent this long leaves the workers page (its heartbeat row is deleted).
    "WORKER_FORGET_S": env.float("STEPWORKS_WORKER_FORGET_S", default=86400.0),
    # The team (README, "Teams"): who may make workspaces, invites, datasets, webhooks.
    "WORKSPACE_CREATION": env.str("STEPWORKS_WORKSPACE_CREATION", default="anyone"),
    "INVITE_DAYS": env.int("STEPWORKS_INVITE_DAYS", default=7),
    "INVITE_MAX_USES": env.int("STEPWORKS_INVITE_MAX_USES", default=1),
    "PUBLIC_URL": env.str("STEPWORKS_PUBLIC_URL", default="http://127.0.0.1:8000"),
    "DATASET_MAX_BYTES": env.int("STEPWORKS_DATASET_MAX_BYTES", default=2 * 1024**3),
    "WEBHOOK_ALLOW_PRIVATE": env.bool("STEPWORKS_WEBHOOK_ALLOW_PRIVATE", default=False),
    "WEBHOOK_TIMEOUT_S": env.float("STEPWORKS_WEBHOOK_TIMEOUT_S", default=10.0),
    "WEBHOOK_ATTEMPTS": env.int("STEPWORKS_WEBHOOK_ATTEMPTS", default=6),
    "WEBHOOK_BACKOFF_S": env.float("STEPWORKS_WEBHOOK_BACKOFF_S", default=15.0),
    "WEBHOOK_LOG_DAYS": env.int("STEPWORKS_WEBHOOK_LOG_DAYS", default=30),
    # Operations (README, "Scaling out"): the workers' input cache and /metrics.
    "INPUT_CACHE_BYTES": env.int("STEPWORKS_INPUT_CACHE_BYTES", default=10 * 1024**3),
    "METRICS_TOKEN": env.str("STEPWORKS_METRICS_TOKEN", default=""),
    "METRICS_WINDOW": env.int("STEPWORKS_METRICS_WINDOW", default=1000),
}
if STEPWORKS["WORKSPACE_CREATION"] not in ("anyone", "staff"):
    raise ImproperlyConfigured(
        "STEPWORKS_WORKSPACE_CREATION must be 'anyone' or 'staff', "
        f"not {STEPWORKS['WORKSPACE_CREATION']!r}"
    )
for _name, _choices in (("STEP_SANDBOX", sandbox.MODES), ("STEP_NETWORK", sandbox.NETWORK_MODES)):
    if STEPWORKS[_name] not in _choices:
        raise ImproperlyConfigured(
            f"STEPWORKS_{_name} must be one of {', '.join(_choices)}, not {STEPWORKS[_name]!r}"
        )

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
