"""URL map: pages per app, the admin, auth, and /api/v1/."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from config import health
from workspaces import account_views

# A path no route matches: the site's 404 page, or the API's JSON error under /api/.
handler404 = "workspaces.errors.not_found"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("config.api_urls")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("account/tokens/", account_views.tokens, name="account-tokens"),
    path("account/password/", account_views.password, name="account-password"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("workspaces.urls")),
    path("", include("pipelines_app.urls")),
    path("", include("runs_app.urls")),
]
