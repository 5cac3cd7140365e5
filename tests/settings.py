"""The only test-specific configuration: the real settings with a throw-away var dir and fast timings."""
import os
import tempfile

os.environ.setdefault("BIFROST_ALLOW_DEV_SECRET", "1")
os.environ.setdefault("BIFROST_VAR_DIR", tempfile.mkdtemp(prefix="bifrost-test-"))

from bifrost.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
