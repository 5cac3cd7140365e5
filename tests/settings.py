"""The only test-specific configuration: the real settings with a throw-away var dir and fast timings."""
import os
import tempfile

os.environ.setdefault("BIFROST_ALLOW_DEV_SECRET", "1")
os.environ.setdefault("BIFROST_VAR_DIR", tempfile.mkdtemp(prefix="bifrost-test-"))

from bifrost.settings import *  # noqa: E402,F403

# Fast hashes for tests; PBKDF2 too, for users that real server processes must be able to log in.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher",
                    "django.contrib.auth.hashers.PBKDF2PasswordHasher"]

# A file, not memory: end-to-end tests run the daemon as a real process against this same test database.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}  # noqa: F405
else:
    # Outage drills terminate every session but the test's own, which they find by this name.
    DATABASES["default"].setdefault("OPTIONS", {})["application_name"] = "bifrost-tests"  # noqa: F405
