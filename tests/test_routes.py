"""The route inventory (issue 10): every URL pattern is classified, and each class is held.

- `public`: anyone (the login page, health checks, the API's description);
- `authenticated`: any signed-in user, about their own account or workspaces;
- `workspace`: one workspace's objects. Anonymous -> 401 (API) or the login page; a member
  of another workspace -> 404 (never 403: that would say the object exists); and an unsafe
  method needs the least role named here (`None`: the route takes no unsafe method).
- `staff`: the operator's view of the workers (page and API): anonymous -> 401 or the login
  page, a signed-in user who is not staff -> 403, staff -> 200; read-only.
- `token`: `/metrics`, for Prometheus: 404 while STEPWORKS_METRICS_TOKEN is unset; then 401
  to anyone without `Authorization: Bearer <token>` (a session is not enough).
- The admin (`admin:*`) is staff only; anonymous requests go to its login page.

A new route that is not in ROUTES fails `test_every_route_is_classified`: whoever adds it
decides who may reach it, here, in review.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from artifacts.store import artifact_store_bytes
from pipelines_app.models import Dataset, DatasetVersion
from runs_app import scheduler
from runs_app.models import Sweep, Webhook
from tests.factories import module_version, pipeline_version
from tests.test_api_support import api_client
from workspaces.invites import invite_create
from workspaces.models import Role

pytestmark = pytest.mark.django_db

PUBLIC, AUTHENTICATED, WORKSPACE = "public", "authenticated", "workspace"
STAFF, TOKEN = "staff", "token"
VIEWER, EDITOR, OWNER = Role.VIEWER, Role.EDITOR, Role.OWNER

ROUTES: dict[str, tuple[str, str | None]] = {
    # public
    "login": (PUBLIC, None),
    "healthz": (PUBLIC, None),
    "readyz": (PUBLIC, None),
    "api:schema": (PUBLIC, None),
    "api:docs": (PUBLIC, None),
    "api:redoc": (PUBLIC, None),
    "api:spec-schema": (PUBLIC, None),
    "workspaces:invite": (PUBLIC, None),  # the invite link: sign up or sign in, then join
    # the signed-in user's own things
    "logout": (AUTHENTICATED, None),
    "account-tokens": (AUTHENTICATED, None),
    "account-password": (AUTHENTICATED, None),
    "pipelines:home": (AUTHENTICATED, None),
    "api:workspace-list": (AUTHENTICATED, None),
    "api:workspace-create": (AUTHENTICATED, None),
    "workspaces:new": (AUTHENTICATED, None),
    # the operator's view
    "runs:workers": (STAFF, None),
    "api:worker-list": (STAFF, None),
    "runs:metrics": (TOKEN, None),
    # one workspace: pages
    "runs:workspace": (WORKSPACE, None),
    "workspaces:members": (WORKSPACE, OWNER),
    "workspaces:invites": (WORKSPACE, OWNER),
    "workspaces:audit": (WORKSPACE, None),
    "pipelines:module": (WORKSPACE, None),
    "pipelines:module_diff": (WORKSPACE, None),
    "pipelines:module_version": (WORKSPACE, None),
    "pipelines:pipeline": (WORKSPACE, None),
    "pipelines:pipeline_diff": (WORKSPACE, None),
    "pipelines:pipeline_clone": (WORKSPACE, EDITOR),
    "pipelines:pipeline_update": (WORKSPACE, EDITOR),
    "runs:pipeline_version": (WORKSPACE, None),
    "runs:pipeline_run": (WORKSPACE, EDITOR),
    "runs:list": (WORKSPACE, None),
    "runs:compare": (WORKSPACE, None),
    "runs:detail": (WORKSPACE, None),
    "runs:live": (WORKSPACE, None),
    "runs:cancel": (WORKSPACE, EDITOR),
    "runs:rerun": (WORKSPACE, EDITOR),
    "runs:clone": (WORKSPACE, EDITOR),
    "runs:forget": (WORKSPACE, EDITOR),
    "runs:pin": (WORKSPACE, EDITOR),
    "runs:annotations": (WORKSPACE, EDITOR),
    "runs:bulk": (WORKSPACE, EDITOR),
    "runs:retention": (WORKSPACE, OWNER),
    "runs:storage": (WORKSPACE, None),
    "runs:datasets": (WORKSPACE, EDITOR),  # everyone lists; editors upload (POST)
    "runs:dataset": (WORKSPACE, None),
    "runs:webhooks": (WORKSPACE, OWNER),
    "runs:step_forget": (WORKSPACE, EDITOR),
    "runs:workbench": (WORKSPACE, EDITOR),  # viewers see the code read-only; editors run it
    "runs:workbench_interface": (WORKSPACE, EDITOR),
    "runs:workbench_result": (WORKSPACE, None),
    "runs:workbench_keep": (WORKSPACE, EDITOR),
    "runs:module_version_forget": (WORKSPACE, EDITOR),
    "runs:lineage": (WORKSPACE, None),
    "runs:outputs_zip": (WORKSPACE, None),
    "runs:step": (WORKSPACE, None),
    "runs:step_log": (WORKSPACE, None),
    "runs:step_metrics": (WORKSPACE, None),
    "runs:artifact": (WORKSPACE, None),
    "runs:artifact_download": (WORKSPACE, None),
    "runs:artifact_image": (WORKSPACE, None),
    "runs:artifact_frame": (WORKSPACE, None),
    "runs:sweep_list": (WORKSPACE, None),
    "runs:sweep_new": (WORKSPACE, EDITOR),
    "runs:sweep_detail": (WORKSPACE, None),
    "runs:sweep_live": (WORKSPACE, None),
    "runs:sweep_cancel": (WORKSPACE, EDITOR),
    "runs:sweep_extend": (WORKSPACE, EDITOR),
    "runs:sweep_promote": (WORKSPACE, EDITOR),
    "runs:sweep_compare": (WORKSPACE, None),
    # one workspace: the API
    "api:workspace-detail": (WORKSPACE, None),
    "api:member-list": (WORKSPACE, None),
    "api:member-set": (WORKSPACE, OWNER),
    "api:workspace-rename": (WORKSPACE, OWNER),
    "api:audit-list": (WORKSPACE, None),
    "api:invite-list": (WORKSPACE, None),
    "api:invite-create": (WORKSPACE, OWNER),
    "api:invite-revoke": (WORKSPACE, OWNER),
    "api:retention": (WORKSPACE, OWNER),
    "api:retention-apply": (WORKSPACE, OWNER),
    "api:storage": (WORKSPACE, None),
    "api:module-list": (WORKSPACE, None),
    "api:module-detail": (WORKSPACE, None),
    "api:module-version-list": (WORKSPACE, None),
    "api:module-version-create": (WORKSPACE, EDITOR),
    "api:module-version-detail": (WORKSPACE, None),
    "api:pipeline-list": (WORKSPACE, None),
    "api:pipeline-detail": (WORKSPACE, None),
    "api:pipeline-version-list": (WORKSPACE, None),
    "api:pipeline-version-create": (WORKSPACE, EDITOR),
    "api:pipeline-version-detail": (WORKSPACE, None),
    "api:pipeline-version-clone": (WORKSPACE, EDITOR),
    "api:pipeline-version-update": (WORKSPACE, EDITOR),
    "api:dataset-list": (WORKSPACE, None),
    "api:dataset-detail": (WORKSPACE, None),
    "api:dataset-version-list": (WORKSPACE, None),
    "api:dataset-version-create": (WORKSPACE, EDITOR),
    "api:dataset-version-detail": (WORKSPACE, None),
    "api:run-list": (WORKSPACE, None),
    "api:run-create": (WORKSPACE, EDITOR),
    "api:run-from-source": (WORKSPACE, EDITOR),
    "api:run-compare": (WORKSPACE, None),
    "api:run-detail": (WORKSPACE, None),
    "api:run-cancel": (WORKSPACE, EDITOR),
    "api:run-rerun": (WORKSPACE, EDITOR),
    "api:run-clone": (WORKSPACE, EDITOR),
    "api:run-forget": (WORKSPACE, EDITOR),
    "api:run-pin": (WORKSPACE, EDITOR),
    "api:run-annotations": (WORKSPACE, EDITOR),
    "api:run-delete": (WORKSPACE, EDITOR),
    "api:run-archive": (WORKSPACE, EDITOR),
    "api:step-forget": (WORKSPACE, EDITOR),
    "api:module-version-forget": (WORKSPACE, EDITOR),
    "api:run-event-list": (WORKSPACE, None),
    "api:run-lineage": (WORKSPACE, None),
    "api:run-outputs-zip": (WORKSPACE, None),
    "api:step-detail": (WORKSPACE, None),
    "api:step-log": (WORKSPACE, None),
    "api:step-metric-list": (WORKSPACE, None),
    "api:sweep-list": (WORKSPACE, None),
    "api:sweep-create": (WORKSPACE, EDITOR),
    "api:sweep-detail": (WORKSPACE, None),
    "api:sweep-run-list": (WORKSPACE, None),
    "api:sweep-extend": (WORKSPACE, EDITOR),
    "api:sweep-cancel": (WORKSPACE, EDITOR),
    "api:sweep-promote": (WORKSPACE, EDITOR),
    "api:sweep-compare": (WORKSPACE, None),
    "api:sweep-metric-list": (WORKSPACE, None),
    "api:webhook-list": (WORKSPACE, None),
    "api:webhook-create": (WORKSPACE, OWNER),
    "api:webhook-delete": (WORKSPACE, OWNER),
    "api:webhook-test": (WORKSPACE, OWNER),
    "api:webhook-delivery-list": (WORKSPACE, None),
    "api:artifact-detail": (WORKSPACE, None),
    "api:artifact-download": (WORKSPACE, None),
}

# Routes whose reading, too, needs more than the viewer role: a member below it gets a 403.
READ_ROLE: dict[str, str] = {
    "workspaces:invites": OWNER,
    "workspaces:audit": OWNER,
    "runs:webhooks": OWNER,
    "api:audit-list": OWNER,
    "api:invite-list": OWNER,
    "api:webhook-list": OWNER,
    "api:webhook-delivery-list": OWNER,
}

RANK = {VIEWER: 0, EDITOR: 1, OWNER: 2}


def _routes(resolver: URLResolver, prefix: str = "", namespace: str = "") -> list[tuple[str, str]]:
    """(name, pattern) of every route, namespaced as `reverse` names it."""
    found = []
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            inner = namespace
            if entry.namespace:
                inner = f"{namespace}:{entry.namespace}" if namespace else entry.namespace
            found += _routes(entry, prefix + str(entry.pattern), inner)
        elif isinstance(entry, URLPattern):
            name = f"{namespace}:{entry.name}" if namespace else str(entry.name)
            found.append((name, prefix + str(entry.pattern)))
    return found


ALL = _routes(get_resolver())


@pytest.fixture
def lab(world: Any) -> dict[str, Any]:
    """One of everything in the workspace `lab`, for the routes' arguments."""
    ws = world.workspace
    prep = module_version(ws, "prep")
    version = pipeline_version(ws, "flow", {"s": {"module_version": prep}})
    artifact = artifact_store_bytes(ws, b"a,b\n1,2\n", "text/csv")
    dataset = Dataset.objects.create(workspace=ws, name="iris")
    DatasetVersion.objects.create(dataset=dataset, number=1, artifact=artifact)
    run = scheduler.run_create(version)
    sweep = Sweep.objects.create(workspace=ws, name="lr", base_version=version)
    invite, token = invite_create(ws, VIEWER, actor=world.owner, max_uses=100)
    hook = Webhook.objects.create(workspace=ws, url="https://hooks.example.com/x", events=[])
    return {
        "run": run,
        "sweep": sweep,
        "sha256": artifact.sha256,
        "token": token,
        "invite": invite,
        "webhook": hook,
    }


def _url(pattern: str, lab: dict[str, Any]) -> str:
    """`pattern` with real arguments from `lab` (a `name` by the collection it is in)."""

    def value(match: re.Match[str]) -> str:
        argument = match.group(1)
        before = pattern[: match.start()]
        if argument in ("slug", "workspace"):
            return "lab"
        if argument == "number":
            return "1"
        if argument == "run_id":
            return str(lab["run"].pk)
        if argument == "sweep_id":
            return str(lab["sweep"].pk)
        if argument == "sha256":
            return lab["sha256"]
        if argument == "token":
            return lab["token"]
        if argument == "invite_id":
            return str(lab["invite"].pk)
        if argument == "webhook_id":
            return str(lab["webhook"].pk)
        if argument == "step" or before.endswith("steps/"):
            return "s"
        collection = before.rstrip("/").rsplit("/", 1)[-1]
        return {"modules": "prep", "pipelines": "flow", "datasets": "iris"}[collection]

    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", value, pattern)


def _client(user: Any, api: bool) -> Any:
    if api:
        return api_client(user)
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def _cases(kind: str) -> list[tuple[str, str]]:
    return [(name, pattern) for name, pattern in ALL if ROUTES.get(name, ("",))[0] == kind]


def test_every_route_is_classified() -> None:
    names = {name for name, _ in ALL if not name.startswith("admin:")}

    assert names - set(ROUTES) == set(), "classify the new routes in ROUTES"
    assert set(ROUTES) - names == set(), "ROUTES names routes that are gone"


@pytest.mark.parametrize(("name", "pattern"), _cases(PUBLIC))
def test_a_public_route_answers_anyone(world: Any, lab: Any, name: str, pattern: str) -> None:
    response = Client().get(_url(pattern, lab))

    assert response.status_code == 200, (name, response.status_code)


@pytest.mark.parametrize(
    ("name", "pattern"), _cases(AUTHENTICATED) + _cases(WORKSPACE) + _cases(STAFF)
)
def test_anonymous_gets_401_or_the_login_page(
    world: Any, lab: Any, name: str, pattern: str
) -> None:
    url = _url(pattern, lab)
    for method in ("get", "post"):
        response = getattr(Client(), method)(url)
        if name.startswith("api:"):
            assert response.status_code in (401, 405), (name, method, response.status_code)
        else:
            assert response.status_code in (302, 405), (name, method, response.status_code)
            if response.status_code == 302:
                assert response["Location"].startswith("/login/"), (name, method)


@pytest.mark.parametrize(("name", "pattern"), _cases(WORKSPACE))
def test_a_member_of_another_workspace_gets_404(
    world: Any, lab: Any, name: str, pattern: str
) -> None:
    client = _client(world.stranger, name.startswith("api:"))
    url = _url(pattern, lab)

    got = client.get(url, HTTP_SEC_FETCH_DEST="iframe")  # the frame's content, not a redirect
    posted = client.post(url)

    assert got.status_code in (404, 405), (name, got.status_code)
    assert posted.status_code in (404, 405), (name, posted.status_code)
    assert 404 in (got.status_code, posted.status_code), name


@pytest.mark.parametrize(
    ("name", "pattern"),
    [(name, pattern) for name, pattern in _cases(WORKSPACE) if ROUTES[name][1] is not None],
)
def test_an_unsafe_method_below_the_least_role_is_403(
    world: Any, lab: Any, name: str, pattern: str
) -> None:
    least = ROUTES[name][1]
    assert least is not None
    below = [
        user
        for user, role in ((world.viewer, VIEWER), (world.editor, EDITOR))
        if RANK[role] < RANK[least]
    ]

    for user in below:
        client = _client(user, name.startswith("api:"))
        response = client.post(_url(pattern, lab))
        if response.status_code == 405:  # its unsafe method is another one
            response = client.put(_url(pattern, lab))
        assert response.status_code == 403, (name, user.username, response.status_code)


@pytest.mark.parametrize("name", sorted(READ_ROLE))
def test_reading_below_the_read_role_is_403_and_at_it_200(world: Any, lab: Any, name: str) -> None:
    pattern = dict(ALL)[name]
    least = READ_ROLE[name]
    for user, role in ((world.viewer, VIEWER), (world.editor, EDITOR), (world.owner, OWNER)):
        response = _client(user, name.startswith("api:")).get(_url(pattern, lab))
        expected = 200 if RANK[role] >= RANK[least] else 403
        assert response.status_code == expected, (name, user.username, response.status_code)


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        (name, pattern)
        for name, pattern in _cases(WORKSPACE)
        if ROUTES[name][1] is None and name.startswith("api:")
    ],
)
def test_a_read_only_api_route_takes_no_unsafe_method(
    world: Any, lab: Any, name: str, pattern: str
) -> None:
    client = _client(world.owner, api=True)
    url = _url(pattern, lab)

    for method in ("post", "put", "patch", "delete"):
        response = getattr(client, method)(url)
        assert response.status_code == 405, (name, method, response.status_code)


@pytest.mark.parametrize(("name", "pattern"), _cases(STAFF))
def test_a_staff_route_is_403_to_everyone_else_and_read_only(
    world: Any, lab: Any, name: str, pattern: str
) -> None:
    url = _url(pattern, lab)
    api = name.startswith("api:")
    for user in (world.owner, world.editor, world.viewer, world.stranger):
        assert _client(user, api).get(url).status_code == 403, (name, user.username)

    world.viewer.is_staff = True
    world.viewer.save()
    staff = _client(world.viewer, api)
    assert staff.get(url).status_code == 200, name
    for method in ("post", "put", "patch", "delete"):
        assert getattr(staff, method)(url).status_code == 405, (name, method)


@pytest.mark.parametrize(("name", "pattern"), _cases(TOKEN))
def test_a_token_route_is_off_without_its_token_and_needs_it_when_on(
    world: Any, lab: Any, settings: Any, name: str, pattern: str
) -> None:
    url = _url(pattern, lab)
    world.owner.is_staff = world.owner.is_superuser = True
    world.owner.save()
    staff = _client(world.owner, api=False)
    assert Client().get(url).status_code == 404, name
    assert staff.get(url).status_code == 404, name

    settings.STEPWORKS = {**settings.STEPWORKS, "METRICS_TOKEN": "s3cret-scrape"}

    assert Client().get(url).status_code == 401, name
    assert staff.get(url).status_code == 401, name  # a session is not a token
    assert Client().get(url, HTTP_AUTHORIZATION="Bearer wrong").status_code == 401, name
    right = Client().get(url, HTTP_AUTHORIZATION="Bearer s3cret-scrape")
    assert right.status_code == 200, name
    assert Client().post(url, HTTP_AUTHORIZATION="Bearer s3cret-scrape").status_code == 405


def test_the_admin_is_staff_only(world: Any) -> None:
    admin_routes = [pattern for name, pattern in ALL if name.startswith("admin:")]
    plain = [
        p
        for p in admin_routes
        if "<" not in p and "(?P" not in p and p not in ("admin/login/", "admin/logout/")
    ]
    client = Client()
    client.force_login(world.owner)  # not staff
    for pattern in plain:
        response = client.get("/" + pattern)
        if response.status_code != 404:
            assert response.status_code == 302, (pattern, response.status_code)
            assert response["Location"].startswith("/admin/login/"), pattern


def test_options_on_the_api_docs_answers_without_a_500(world: Any) -> None:
    for url in ("/api/v1/docs/", "/api/v1/redoc/", "/api/v1/schema/"):
        assert Client().options(url).status_code < 500, url
