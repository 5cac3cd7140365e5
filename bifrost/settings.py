"""Bifrost's one settings module: everything configurable comes from the environment (DESIGN §8)."""
from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("BIFROST_VAR_DIR", BASE_DIR / "var"))
(VAR_DIR / "static").mkdir(parents=True, exist_ok=True)


def _env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, "1" if default else "0").strip().lower() in {"1", "true", "yes", "on"}


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return default if raw in (None, "") else float(raw)


DEBUG = _env_bool("DJANGO_DEBUG", False)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
# Keys from examples and docs, and anything short, are refused outside DEBUG: a known key signs anyone's session.
_PLACEHOLDER_KEYS = ("change-me", "changeme", "secret", "django-insecure", "bifrost-dev")
if SECRET_KEY and not DEBUG and (len(SECRET_KEY) < 32 or SECRET_KEY.lower().startswith(_PLACEHOLDER_KEYS)):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("DJANGO_SECRET_KEY is a placeholder or shorter than 32 characters: generate one "
                               "(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')")
if not SECRET_KEY:
    if not DEBUG and not os.environ.get("BIFROST_ALLOW_DEV_SECRET"):
        # A production process must never run on a key that is in the repository.
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off")
    # The demo's key: random, made once and kept under var/ (never a key anyone else knows).
    _key_file = VAR_DIR / "secret_key"
    if not _key_file.exists():
        import secrets

        _key_file.touch(mode=0o600)
        _key_file.write_text(secrets.token_urlsafe(50))
    SECRET_KEY = _key_file.read_text().strip()

ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h.strip()]
# Behind a TLS proxy: the origins browsers post from, and (opt-in) the proxy's word that the request was HTTPS.
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]
if _env_bool("BIFROST_TRUST_PROXY_SSL", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    # Not "daphne": `run_web` starts daphne's own CLI, and the app would import twisted into every command (140 ms
    # of each backtest's and each CLI call's start-up) only to serve `runserver`, which Bifrost does not use.
    # The admin is discovered by the URL map (bifrost/urls.py), so commands that serve no page (a backtest, the
    # daemon) skip importing every admin module at start-up.
    "django.contrib.admin.apps.SimpleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_q",
    "trading",
    "monitor",
    "backtests",
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
]

ROOT_URLCONF = "bifrost.urls"
WSGI_APPLICATION = "bifrost.wsgi.application"
ASGI_APPLICATION = "bifrost.asgi.application"

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

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'bifrost.sqlite3'}",
        conn_max_age=60, conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web read while the daemon writes; IMMEDIATE avoids lock-upgrade deadlocks.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 5,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve app static files straight from their apps too, so a missed collectstatic never breaks the pages.
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = VAR_DIR / "media"

# Secure cookies outside DEBUG. Browsers accept them from http://127.0.0.1 and localhost; a LAN address over
# plain HTTP needs TLS in front, or BIFROST_INSECURE_COOKIES=1 as a deliberate choice.
SESSION_COOKIE_SECURE = not DEBUG and not _env_bool("BIFROST_INSECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

REDIS_URL = os.environ.get("REDIS_URL", "")
# One cache for every web process and command (throttles and rate limits must agree across processes): Redis when
# configured, else a database table (made by a migration).
CACHES = {"default": (
    {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL} if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "bifrost_cache"})}

CHANNEL_LAYERS = (
    {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
    if REDIS_URL
    else {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
)

Q_CLUSTER = {
    "name": "bifrost",
    "workers": int(os.environ.get("BIFROST_Q_WORKERS", "2")),
    "timeout": 3600,
    "retry": 3700,
    "catch_up": False,
    "label": "Task queue",
    **({"redis": REDIS_URL} if REDIS_URL else {"orm": "default"}),
}

REST_FRAMEWORK = {
    # Token first: an anonymous request then gets 401 with `WWW-Authenticate: Token`, not a bare 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "monitor.errors.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {"control": os.environ.get("BIFROST_CONTROL_RATE", "60/min"),
                               "queue": os.environ.get("BIFROST_QUEUE_RATE", "30/hour")},
    # Bodies nested deeper than Python's parser recurses, and NUL characters (PostgreSQL jsonb cannot store them),
    # are refused as 400s naming the field instead of crashing into 500s.
    "DEFAULT_PARSER_CLASSES": ["monitor.parsers.SafeJSONParser", "rest_framework.parsers.FormParser",
                               "rest_framework.parsers.MultiPartParser"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Bifrost API",
    "VERSION": "1.0.0",
    # The docs page's script and styles from a pinned package, served by us: nothing loads from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_PERMISSIONS": ["monitor.permissions.CanView"],
    "ENUM_NAME_OVERRIDES": {
        "ControlCommandStateEnum": "trading.models.ControlCommand.State",
        "RunStateEnum": "backtests.models.RunState",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("BIFROST_LOG_LEVEL", "INFO")},
}

# Bifrost's own knobs (DESIGN §8). Code reads these, never os.environ.
BIFROST_BROKER = os.environ.get("BIFROST_BROKER", "sim")
BIFROST_MODE = os.environ.get("BIFROST_MODE", "paper")
BIFROST_LIVE_CONFIRM = os.environ.get("BIFROST_LIVE_CONFIRM", "")
IB_HOST = os.environ.get("IB_HOST", "127.0.0.1")
IB_PORT = int(os.environ.get("IB_PORT", "7497"))
IB_CLIENT_ID = int(os.environ.get("IB_CLIENT_ID", "1"))
IB_ACCOUNT = os.environ.get("IB_ACCOUNT", "")
# Which IB client library IBBroker drives: ib_insync (default install) or ib_async (its own venv).
BIFROST_IB_CLIENT = os.environ.get("BIFROST_IB_CLIENT", "ib_insync")
BIFROST_HEARTBEAT_S = _env_float("BIFROST_HEARTBEAT_S", 1.0)
BIFROST_HISTORY_S = _env_float("BIFROST_HISTORY_S", 10.0)
BIFROST_COMMAND_TTL_S = _env_float("BIFROST_COMMAND_TTL_S", 300.0)
# A backtest run whose worker has not written a sign of life for this long is queued again (a worker or machine
# died mid-run); longer than a cold start of the compiled replay.
BIFROST_RUN_STALE_S = _env_float("BIFROST_RUN_STALE_S", 300.0)
# The commander (README: Strategies and the commander): its daily window (US/Eastern, trading days only), the
# chain its strategies see, the global risk rules and the limit price offset of its option orders.
BIFROST_COMMANDER_WINDOW = os.environ.get("BIFROST_COMMANDER_WINDOW", "15:30")
BIFROST_COMMANDER_MAX_DTE = int(os.environ.get("BIFROST_COMMANDER_MAX_DTE", "60"))
BIFROST_COMMANDER_STRIKES = int(os.environ.get("BIFROST_COMMANDER_STRIKES", "6"))
BIFROST_COMMANDER_MAX_CONTRACTS = int(os.environ.get("BIFROST_COMMANDER_MAX_CONTRACTS", "50"))
BIFROST_COMMANDER_MAX_PREMIUM_USD = _env_float("BIFROST_COMMANDER_MAX_PREMIUM_USD", 250_000.0)
BIFROST_COMMANDER_LIMIT_OFFSET_USD = _env_float("BIFROST_COMMANDER_LIMIT_OFFSET_USD", 0.05)
BIFROST_BIND = os.environ.get("BIFROST_BIND", "127.0.0.1:8000")
BIFROST_WEB_PROCESSES = int(os.environ.get("BIFROST_WEB_PROCESSES", "2"))
# Each daemon journals to journal-<lease>.jsonl here; refused records go to journal-rejected.jsonl beside them.
BIFROST_JOURNAL_DIR = Path(os.environ.get("BIFROST_JOURNAL_DIR", VAR_DIR))
# How often the daemon re-reads open orders, executions and completed orders while connected.
BIFROST_RECONCILE_S = _env_float("BIFROST_RECONCILE_S", 30.0)
# Drill only: the daemon's clock runs this many seconds ahead (negative: behind) of the host's.
BIFROST_CLOCK_OFFSET_S = _env_float("BIFROST_CLOCK_OFFSET_S", 0.0)
# The daemon's own database connections give up instead of hanging: a stall is an outage (journal and carry on).
BIFROST_DAEMON_DB_OPTIONS = {"connect_timeout": 3, "options": "-c statement_timeout=5000 -c lock_timeout=2000"}
BIFROST_SIM_STATE_PATH = Path(os.environ.get("BIFROST_SIM_STATE_PATH", VAR_DIR / "sim_account.json"))
BIFROST_SIM_SEED = int(os.environ.get("BIFROST_SIM_SEED", "7"))
BIFROST_SIM_TICK_S = _env_float("BIFROST_SIM_TICK_S", 0.25)
# How many times faster than the wall clock the simulated price moves (the demo wants hedges in a minute).
BIFROST_SIM_SPEED = _env_float("BIFROST_SIM_SPEED", 200.0)
# Fault injection for tests and drills, comma-separated: connect_hang, silent, reject_orders.
BIFROST_SIM_FAULTS = frozenset(f.strip() for f in os.environ.get("BIFROST_SIM_FAULTS", "").split(",") if f.strip())
# Status snapshots and blocked decisions older than this many days are deleted by a daily job (0 keeps all).
BIFROST_HISTORY_RETENTION_DAYS = _env_float("BIFROST_HISTORY_RETENTION_DAYS", 90.0)
BIFROST_SUPERVISOR_URL = os.environ.get("BIFROST_SUPERVISOR_URL", f"unix://{VAR_DIR / 'supervisor.sock'}")

# ---- alerts (DESIGN §10): every channel optional; the watchdog program sends, the daemon never does ----------
BIFROST_TELEGRAM_API_URL = os.environ.get("BIFROST_TELEGRAM_API_URL", "https://api.telegram.org")
BIFROST_TELEGRAM_BOT_TOKEN = os.environ.get("BIFROST_TELEGRAM_BOT_TOKEN", "")
BIFROST_TELEGRAM_CHAT_ID = os.environ.get("BIFROST_TELEGRAM_CHAT_ID", "")
BIFROST_ALERT_WEBHOOK_URL = os.environ.get("BIFROST_ALERT_WEBHOOK_URL", "")
BIFROST_ALERT_EMAILS = [a.strip() for a in os.environ.get("BIFROST_ALERT_EMAILS", "").split(",") if a.strip()]
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "bifrost@localhost")
BIFROST_ALERT_RED_S = _env_float("BIFROST_ALERT_RED_S", 30.0)  # red this long → alert
BIFROST_ALERT_YELLOW_S = _env_float("BIFROST_ALERT_YELLOW_S", 600.0)
BIFROST_ALERT_REPEAT_S = _env_float("BIFROST_ALERT_REPEAT_S", 1800.0)  # the same alert at most this often
# IB's nightly restart, US/Eastern "HH:MM-HH:MM" (may wrap midnight): disconnects in it are not alerts.
BIFROST_IB_RESTART_WINDOW = os.environ.get("BIFROST_IB_RESTART_WINDOW", "")
BIFROST_WATCHDOG_S = _env_float("BIFROST_WATCHDOG_S", 1.0)  # how often the watchdog looks
BIFROST_METRICS_OPEN = _env_bool("BIFROST_METRICS_OPEN", False)  # /metrics without a login (a trusted scraper)

# ---- the control room's limits (issue 13) ---------------------------------------------------------------------
BIFROST_QUEUE_RATE = os.environ.get("BIFROST_QUEUE_RATE", "30/hour")  # backtests and sweeps queued per user
BIFROST_MAX_SWEEP_RUNS = int(os.environ.get("BIFROST_MAX_SWEEP_RUNS", "200"))
BIFROST_MAX_SYNTHETIC_TICKS = int(os.environ.get("BIFROST_MAX_SYNTHETIC_TICKS", "5000000"))
BIFROST_UPLOAD_MAX_MB = _env_float("BIFROST_UPLOAD_MAX_MB", 100.0)
BIFROST_UPLOAD_INLINE_MAX_MB = _env_float("BIFROST_UPLOAD_INLINE_MAX_MB", 5.0)  # larger: parsed by a worker
BIFROST_CONTROL_RATE = os.environ.get("BIFROST_CONTROL_RATE", "60/min")  # per user, every path (API, admin, CLI)
BIFROST_LOGIN_RATE = os.environ.get("BIFROST_LOGIN_RATE", "10/min")  # per user name and per address
BIFROST_SUPERVISOR_TIMEOUT_S = _env_float("BIFROST_SUPERVISOR_TIMEOUT_S", 10.0)
