"""Websocket routes."""
from django.urls import path

from monitor.consumers import StatusConsumer

websocket_urlpatterns = [path("ws/status/", StatusConsumer.as_asgi())]
