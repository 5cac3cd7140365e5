"""URL map: the admin control room, the API, the lamp page, backtests and statistics."""
from django.contrib import admin
from django.urls import include, path

admin.autodiscover()  # here, not at start-up: settings install SimpleAdminConfig

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("monitor.urls")),
    path("", include("backtests.urls")),
]

handler400 = "monitor.errors.bad_request"
handler404 = "monitor.errors.not_found"
handler500 = "monitor.errors.server_error"
