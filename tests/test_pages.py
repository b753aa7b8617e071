"""The page shell, login/logout, and the first design-time pages.

Rows are made directly through the ORM (not the services), so these tests pin the pages
alone: what they show, who may see them, and what they cost in queries.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from artifacts.models import Artifact
from pipelines_app.models import (
    Dataset,
    DatasetVersion,
    Module,
    ModuleVersion,
    Pipeline,
    PipelineStep,
    PipelineVersion,
)
from runs_app.models import PipelineRun, RunStatus
from workspaces.models import Membership, Role

pytestmark = pytest.mark.django_db

STEP_SOURCE = (
    "OUTPUTS = ('model',)\n\n"
    "def train(ctx, features, *, hidden: int = 64, note: str = '<b>x</b>'):\n"
    "    return {'model': features}\n"
)


# --- builders ----------------------------------------------------------------------------------
def make_module_version(
    workspace: Any, name: str, number: int = 1, parent: ModuleVersion | None = None, **extra: Any
) -> ModuleVersion:
    module, _ = Module.objects.get_or_create(workspace=workspace, name=name)
    fields: dict[str, Any] = {
        "entrypoint": "train.py:train",
        "files": {"train.py": STEP_SOURCE, "helpers/util.py": "X = 1\n"},
        "code_digest": hashlib.sha256(f"{workspace.slug}/{name}@{number}".encode()).hexdigest(),
        "interface": {
            "inputs": ["features"],
            "outputs": ["model"],
            "params": {
                "hidden": {"type": "int", "default": 64, "required": False},
                "lr": {"type": "float", "required": True},
            },
        },
        "message": f"{name} version {number}",
        "imports": ["numpy"],
    }
    fields.update(extra)
    return ModuleVersion.objects.create(module=module, number=number, parent=parent, **fields)


def make_pipeline_version(
    workspace: Any,
    name: str,
    steps: dict[str, ModuleVersion],
    number: int = 1,
    parent: PipelineVersion | None = None,
) -> PipelineVersion:
    pipeline, _ = Pipeline.objects.get_or_create(workspace=workspace, name=name)
    inputs = {
        step: ({"features": "dataset:iris@1"} if i == 0 else {}) for i, step in enumerate(steps)
    }
    spec = {
        "steps": {
            step: {"module": mv.ref, "module_version": mv.pk, "params": {}, "inputs": inputs[step]}
            for step, mv in steps.items()
        }
    }
    version = PipelineVersion.objects.create(
        pipeline=pipeline,
        number=number,
        parent=parent,
        spec=spec,
        source=f"steps:\n  # {name} v{number}\n",
        digest=hashlib.sha256(f"{name}@{number}".encode()).hexdigest(),
        message=f"{name} pipeline version {number}",
    )
    for position, (step, mv) in enumerate(steps.items()):
        PipelineStep.objects.create(
            pipeline_version=version,
            name=step,
            position=position,
            module_version=mv,
            params={"hidden": 32},
            inputs=inputs[step],
        )
    return version


def make_dataset_version(workspace: Any, name: str, size: int = 2048) -> DatasetVersion:
    dataset, _ = Dataset.objects.get_or_create(workspace=workspace, name=name)
    digest = hashlib.sha256(f"{workspace.slug}/{name}".encode()).hexdigest()
    artifact = Artifact.objects.create(
        workspace=workspace, sha256=digest, size=size, media_type="text/csv", storage_name=digest
    )
    return DatasetVersion.objects.create(dataset=dataset, number=1, artifact=artifact)


def populate(workspace: Any, n: int, prefix: str = "") -> dict[str, Any]:
    """n of everything the workspace home lists; returns the first of each."""
    first: dict[str, Any] = {}
    for i in range(n):
        mv = make_module_version(workspace, f"{prefix}mod-{i}")
        pv = make_pipeline_version(workspace, f"{prefix}pipe-{i}", {"train": mv})
        ds = make_dataset_version(workspace, f"{prefix}data-{i}")
        status = RunStatus.RUNNING if i % 2 else RunStatus.SUCCEEDED
        run = PipelineRun.objects.create(workspace=workspace, pipeline_version=pv, status=status)
        first = first or {"module_version": mv, "pipeline_version": pv, "dataset": ds, "run": run}
    return first


def page_urls(slug: str, module: str, pipeline: str) -> list[str]:
    return [
        reverse("runs:workspace", args=[slug]),
        reverse("pipelines:module", args=[slug, module]),
        reverse("pipelines:module_version", args=[slug, module, 1]),
        reverse("pipelines:pipeline", args=[slug, pipeline]),
        reverse("runs:pipeline_version", args=[slug, pipeline, 1]),
    ]


@pytest.fixture
def lab(world: Any) -> dict[str, Any]:
    """The lab has a two-version module and a two-version pipeline over it."""
    v1 = make_module_version(world.workspace, "train")
    v2 = make_module_version(world.workspace, "train", 2, parent=v1, warnings=["scipy missing"])
    p1 = make_pipeline_version(world.workspace, "classify", {"train": v1})
    p2 = make_pipeline_version(world.workspace, "classify", {"train": v2}, 2, parent=p1)
    return {"v1": v1, "v2": v2, "p1": p1, "p2": p2}


def text(response: Any) -> str:
    return response.content.decode()


# --- login, logout, the shell -----------------------------------------------------------------
def test_login_page_renders_and_logs_in(client: Any, world: Any) -> None:
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert 'name="username"' in text(page) and 'name="csrfmiddlewaretoken"' in text(page)

    response = client.post(reverse("login"), {"username": "olivia", "password": "pw-olivia-1"})

    assert response.status_code == 302 and response.url == reverse("pipelines:home")
    assert client.session["_auth_user_id"] == str(world.owner.pk)


def test_login_with_a_wrong_password_says_so(client: Any, world: Any) -> None:
    response = client.post(reverse("login"), {"username": "olivia", "password": "nope"})

    assert response.status_code == 200
    assert "enter a correct username and password" in text(response)
    assert "_auth_user_id" not in client.session


def test_logout_is_a_post_and_ends_the_session(client: Any, world: Any) -> None:
    client.force_login(world.owner)

    assert client.get(reverse("logout")).status_code == 405  # a link or prefetch can't log out
    assert "_auth_user_id" in client.session
    response = client.post(reverse("logout"))

    assert response.status_code == 302 and response.url == reverse("login")
    assert "_auth_user_id" not in client.session
    assert client.get(reverse("runs:workspace", args=["lab"])).status_code == 302


def test_anonymous_is_sent_to_login(client: Any, lab: Any) -> None:
    for url in [reverse("pipelines:home"), *page_urls("lab", "train", "classify")]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.url == f"{reverse('login')}?next={url}"


def test_shell_has_nav_csrf_header_and_only_vendored_assets(client: Any, world: Any) -> None:
    client.force_login(world.owner)
    html = text(client.get(reverse("runs:workspace", args=["lab"])))

    assert re.search(r"<body hx-headers='\{\"X-CSRFToken\": \"[\w-]+\"\}'>", html)
    assert "/static/vendor/htmx.min.js" in html and "/static/vendor/pico.min.css" in html
    assert "/static/css/app.css" in html
    assert re.search(r'<form method="post" action="/logout/"', html)
    assert "olivia" in html
    assert reverse("admin:index") not in html  # not staff
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)


def test_staff_see_the_admin_link(client: Any, world: Any) -> None:
    world.owner.is_staff = True
    world.owner.save()
    client.force_login(world.owner)

    html = text(client.get(reverse("runs:workspace", args=["lab"])))

    assert f'href="{reverse("admin:index")}"' in html


# --- home ----------------------------------------------------------------------------------
def test_home_with_one_workspace_redirects_to_it(client: Any, world: Any) -> None:
    client.force_login(world.owner)

    response = client.get(reverse("pipelines:home"))

    assert response.status_code == 302
    assert response.url == reverse("runs:workspace", args=["lab"])


def test_home_lists_every_workspace_of_the_user_with_the_role(client: Any, world: Any) -> None:
    Membership.objects.create(user=world.viewer, workspace=world.other_workspace, role=Role.EDITOR)
    client.force_login(world.viewer)

    response = client.get(reverse("pipelines:home"))

    html = text(response)
    assert response.status_code == 200
    assert reverse("runs:workspace", args=["lab"]) in html
    assert reverse("runs:workspace", args=["elsewhere"]) in html
    assert "viewer" in html and "editor" in html


def test_home_without_a_workspace_says_what_to_do(client: Any, db: None) -> None:
    loner = get_user_model().objects.create_user("lonely", password="pw-lonely-1")
    client.force_login(loner)

    response = client.get(reverse("pipelines:home"))

    assert response.status_code == 200
    assert "for an invite link or to add you" in text(response)
    assert f'href="{reverse("workspaces:new")}"' in text(response)


# --- workspace home --------------------------------------------------------------------------
def test_workspace_home_lists_runs_pipelines_modules_and_datasets(client: Any, world: Any) -> None:
    first = populate(world.workspace, 3)
    populate(world.other_workspace, 1, prefix="secret-")
    client.force_login(world.viewer)

    response = client.get(reverse("runs:workspace", args=["lab"]))

    html = text(response)
    assert response.status_code == 200
    assert 'Running now <span class="count">(1)</span>' in html
    assert 'Recent runs <span class="count">(3)</span>' in html
    assert 'Modules <span class="count">(3)</span>' in html
    assert 'Pipelines <span class="count">(3)</span>' in html
    assert 'Datasets <span class="count">(3)</span>' in html
    assert 'class="status status-running"' in html and 'class="status status-succeeded"' in html
    assert f"#{first['run'].pk}" in html
    assert reverse("pipelines:module", args=["lab", "mod-0"]) in html
    assert reverse("pipelines:module_version", args=["lab", "mod-0", 1]) in html
    assert reverse("pipelines:pipeline", args=["lab", "pipe-0"]) in html
    assert "dataset:data-0@1" in html and "2.0\xa0KB" in html
    assert "secret-" not in html  # nothing of the other workspace leaks in


def test_empty_workspace_home_says_what_to_do_next(client: Any, world: Any) -> None:
    client.force_login(world.owner)

    html = text(client.get(reverse("runs:workspace", args=["lab"])))

    assert "No runs yet" in html and "Nothing is running" in html
    assert "No pipelines yet" in html and "manage.py seed_demo" in html
    assert "No modules yet" in html and "No datasets yet" in html
    assert "manage.py push_module lab" in html and "manage.py push_pipeline lab" in html


# Session, user, workspace, run counts, running runs, recent runs, pipelines, modules, datasets.
WORKSPACE_HOME_QUERIES = 9


@pytest.mark.parametrize("n", [1, 50])
def test_workspace_home_costs_the_same_queries_for_1_or_50_rows(
    client: Any, world: Any, django_assert_num_queries: Any, n: int
) -> None:
    populate(world.workspace, n)
    client.force_login(world.owner)

    with django_assert_num_queries(WORKSPACE_HOME_QUERIES):
        response = client.get(reverse("runs:workspace", args=["lab"]))

    assert response.status_code == 200
    assert f'Modules <span class="count">({n})</span>' in text(response)
    assert f"mod-{n - 1}" in text(response)


# --- modules -------------------------------------------------------------------------------
def test_module_detail_lists_versions_with_parent_and_short_digest(
    client: Any, world: Any, lab: Any
) -> None:
    client.force_login(world.editor)

    response = client.get(reverse("pipelines:module", args=["lab", "train"]))

    html = text(response)
    assert response.status_code == 200
    assert 'Versions <span class="count">(2)</span>' in html
    assert "train version 1" in html and "train version 2" in html
    assert lab["v2"].code_digest[:12] in html and lab["v2"].code_digest not in html.replace(
        f'title="{lab["v2"].code_digest}"', ""
    )
    assert html.index("@2") < html.index("@1")  # newest first
    assert reverse("pipelines:module_version", args=["lab", "train", 1]) in html


# Session, user, the module with its workspace and the caller's role (one access query),
# versions.
MODULE_DETAIL_QUERIES = 4


@pytest.mark.parametrize("n", [1, 50])
def test_module_detail_costs_the_same_queries_for_1_or_50_versions(
    client: Any, world: Any, django_assert_num_queries: Any, n: int
) -> None:
    parent = None
    for number in range(1, n + 1):
        parent = make_module_version(
            world.workspace, "train", number, parent=parent, created_by=world.owner
        )
    client.force_login(world.owner)

    with django_assert_num_queries(MODULE_DETAIL_QUERIES):
        response = client.get(reverse("pipelines:module", args=["lab", "train"]))

    assert response.status_code == 200
    assert f"train version {n}" in text(response)
    assert f'Versions <span class="count">({n})</span>' in text(response)


def test_module_version_shows_files_interface_and_warnings(
    client: Any, world: Any, lab: Any
) -> None:
    client.force_login(world.viewer)

    response = client.get(reverse("pipelines:module_version", args=["lab", "train", 2]))

    html = text(response)
    assert response.status_code == 200
    assert "train@2" in html and "train.py:train" in html and lab["v2"].code_digest in html
    assert "helpers/util.py" in html and "<pre><code>X = 1\n</code></pre>" in html
    # File text is escaped, never rendered as markup.
    assert "note: str = &#x27;&lt;b&gt;x&lt;/b&gt;&#x27;" in html and "<b>x</b>" not in html
    assert re.search(
        r'<td class="mono">hidden</td>\s*<td class="mono">int</td>\s*'
        r'<td class="mono">64</td>',
        html,
    )
    assert re.search(
        r'<td class="mono">lr</td>\s*<td class="mono">float</td>\s*'
        r'<td class="mono"><em>required</em></td>',
        html,
    )
    assert '<li class="mono">features</li>' in html and '<li class="mono">model</li>' in html
    assert "scipy missing" in html
    assert reverse("pipelines:module_version", args=["lab", "train", 1]) in html  # the parent


def test_unknown_module_version_is_404(client: Any, world: Any, lab: Any) -> None:
    client.force_login(world.owner)

    assert (
        client.get(reverse("pipelines:module_version", args=["lab", "train", 9])).status_code == 404
    )
    assert client.get(reverse("pipelines:module", args=["lab", "nope"])).status_code == 404


# --- pipelines -----------------------------------------------------------------------------
def test_pipeline_detail_lists_versions_with_parent_links(
    client: Any, world: Any, lab: Any
) -> None:
    client.force_login(world.viewer)

    response = client.get(reverse("pipelines:pipeline", args=["lab", "classify"]))

    html = text(response)
    assert response.status_code == 200
    assert "classify pipeline version 2" in html and "classify pipeline version 1" in html
    parent_link = reverse("runs:pipeline_version", args=["lab", "classify", 1])
    assert f'<a href="{parent_link}">@1</a>' in html
    assert lab["p2"].digest[:12] in html


def test_pipeline_version_shows_steps_and_spec_source(client: Any, world: Any, lab: Any) -> None:
    client.force_login(world.viewer)

    response = client.get(reverse("runs:pipeline_version", args=["lab", "classify", 2]))

    html = text(response)
    assert response.status_code == 200
    assert "classify@2" in html and lab["p2"].digest in html
    assert reverse("pipelines:module_version", args=["lab", "train", 2]) in html
    assert "features ← dataset:iris@1" in html
    assert "{&quot;hidden&quot;: 32}" in html
    assert "<pre><code>steps:\n  # classify v2\n</code></pre>" in html
    assert reverse("runs:pipeline_version", args=["lab", "classify", 1]) in html  # parent


# --- who may see what ------------------------------------------------------------------------
def test_stranger_gets_404_on_every_page_of_another_workspace(
    client: Any, world: Any, lab: Any
) -> None:
    # The stranger owns "elsewhere"; lab's module and pipeline names are real.
    client.force_login(world.stranger)

    for url in page_urls("lab", "train", "classify"):
        assert client.get(url).status_code == 404, url


def test_member_gets_404_for_real_names_of_another_workspace(client: Any, world: Any) -> None:
    make_module_version(world.other_workspace, "secret-train")
    make_pipeline_version(
        world.other_workspace,
        "secret-pipe",
        {"train": ModuleVersion.objects.get(module__name="secret-train")},
    )
    client.force_login(world.owner)

    for url in page_urls("elsewhere", "secret-train", "secret-pipe"):
        assert client.get(url).status_code == 404, url
    # ... and the same names under the member's own workspace do not reach them either.
    for url in page_urls("lab", "secret-train", "secret-pipe")[1:]:
        assert client.get(url).status_code == 404, url


def test_viewer_can_view_every_page(client: Any, world: Any, lab: Any) -> None:
    client.force_login(world.viewer)

    for url in page_urls("lab", "train", "classify"):
        assert client.get(url).status_code == 200, url
