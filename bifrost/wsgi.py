"""WSGI entry point (management tooling only; the web runs ASGI under daphne)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bifrost.settings")
application = get_wsgi_application()
