"""URL map: the admin control room, the API and the lamp page."""
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("monitor.urls")),
]
