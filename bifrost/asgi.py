"""ASGI entry point for daphne: websockets through Channels (session-authenticated), HTTP through Django's WSGI
handler on a small pool of reused threads.

Why not Django's ASGI handler for HTTP: every view here is synchronous, and the ASGI handler gives each request a
fresh thread (asgiref's per-request thread-sensitive context) and so a fresh database connection, plus thread
hops around sync-only middleware. Measured with bench/api_load.py on this 2-core machine: 275 -> 600 req/s on
GET /api/status/. Each request still runs wholly in one thread; pooled threads keep their connections
(CONN_MAX_AGE, with health checks)."""
import gc
import os
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bifrost.settings")
django_wsgi_app = get_wsgi_application()

# Channels' routing imports models: Django must be set up first.
from asgiref.sync import sync_to_async  # noqa: E402
from asgiref.wsgi import WsgiToAsgi, WsgiToAsgiInstance  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from monitor.routing import websocket_urlpatterns  # noqa: E402


class _PooledRequest(WsgiToAsgiInstance):
    # asgiref runs the WSGI call "thread-sensitively", i.e. every request of the process on one single thread;
    # the event loop's thread pool lets a slow page (stats, admin) run beside the lamp's requests.
    run_wsgi_app = sync_to_async(WsgiToAsgiInstance.run_wsgi_app.__wrapped__, thread_sensitive=False)


class PooledWsgiToAsgi(WsgiToAsgi):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _PooledRequest(self.wsgi_application, self.duplicate_header_limit)(scope, receive, send)


application = ProtocolTypeRouter({
    "http": PooledWsgiToAsgi(django_wsgi_app),
    "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
})

# Everything loaded so far lives as long as the process: keep it out of the garbage collector's full passes,
# which otherwise set the API's p99 (bench/api_load.py: p99 ~150 -> ~100 ms).
gc.freeze()
