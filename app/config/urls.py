from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from chat.urls import api_urlpatterns

# /healthz, /readyz and /metrics are answered by chat.health.HealthEndpointsMiddleware,
# ahead of the host check, so that probes by pod IP work.
urlpatterns = [
    path("", RedirectView.as_view(pattern_name="chat:index", permanent=False)),
    path("chat/", include("chat.urls")),
    path("api/", include(api_urlpatterns)),
    path("accounts/", include("accounts.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]
