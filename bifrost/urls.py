"""URL map: the admin control room now; the API and the lamp page join in monitor.urls."""
from django.contrib import admin
from django.urls import path

urlpatterns = [
    path("admin/", admin.site.urls),
]
