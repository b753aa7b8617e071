"""Design-time pages: thin views over selectors and services."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest
from django.template.response import TemplateResponse

from pipelines_app.selectors import workspaces_for_user


@login_required
def home(request: HttpRequest) -> TemplateResponse:
    return TemplateResponse(
        request, "pipelines_app/home.html", {"workspaces": workspaces_for_user(request.user)}
    )
