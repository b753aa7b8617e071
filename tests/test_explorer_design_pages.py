"""Design-time pages of the explorer: run a pipeline version with overrides, clone and edit
a spec, the version tree, module code diffs, where a version is used and what it breaks."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.urls import reverse

from pipelines_app.models import PipelineVersion, VersionOrigin
from pipelines_app.selectors import binding_problems
from pipelines_app.services import module_version_create, pipeline_version_create
from runs_app.models import PipelineRun, StepRun
from stepworks.changes import interface_changes

pytestmark = pytest.mark.django_db

PREP = "OUTPUTS = ('train',)\n\ndef prep(ctx, *, rows: int = 10):\n    return {'train': rows}\n"
TRAIN = (
    "OUTPUTS = ('model',)\n\n"
    "def train(ctx, train, *, hidden: int = 64, lr: float = 0.1):\n"
    "    return {'model': train}\n"
)
TRAIN_V2 = (
    "OUTPUTS = ('weights',)\n\n"
    "def train(ctx, train, labels, *, hidden: int = 128, epochs: int):\n"
    "    return {'weights': train}\n"
)
SPEC = """steps:
  prep: {module: prep@latest}
  train: {module: train@1, inputs: {train: prep.train}, params: {hidden: 32}}
"""


@pytest.fixture
def demo(world: Any) -> dict[str, Any]:
    ws = world.workspace
    prep = module_version_create(ws, "prep", {"prep.py": PREP}, "prep.py:prep")
    train = module_version_create(ws, "train", {"train.py": TRAIN}, "train.py:train")
    train2 = module_version_create(ws, "train", {"train.py": TRAIN_V2}, "train.py:train")
    version = pipeline_version_create(ws, "classify", SPEC, message="first")
    return {"prep": prep, "train": train, "train2": train2, "version": version}


def text(response: Any) -> str:
    return response.content.decode()


def version_url(name: str = "pipeline_version", number: int = 1) -> str:
    app = "pipelines" if name == "pipeline_clone" else "runs"  # the pages that show runs
    return reverse(f"{app}:{name}", args=["lab", "classify", number])


# --- pipeline version: graph and run form --------------------------------------------------------
def test_pipeline_version_page_draws_the_dag_and_offers_a_run_form_to_editors(
    client: Any, world: Any, demo: Any
) -> None:
    client.force_login(world.editor)

    html = text(client.get(version_url()))

    graph = re.search(r'<script id="version-graph" type="application/json">(.*?)</script>', html)
    assert graph and '"source": "prep", "target": "train"' in graph.group(1)
    assert f'action="{version_url("pipeline_run")}"' in html
    assert 'name="train.hidden" id="id_train.hidden" value="32"' in html  # the version's value
    assert 'name="train.lr" id="id_train.lr" value="0.1"' in html  # the module's default
    assert 'name="prep.rows" id="id_prep.rows" value="10"' in html
    assert version_url("pipeline_clone") in html


def test_viewers_see_no_run_form_and_cannot_post_one(client: Any, world: Any, demo: Any) -> None:
    client.force_login(world.viewer)

    html = text(client.get(version_url()))
    post = client.post(version_url("pipeline_run"), {"train.hidden": "99"})

    assert version_url("pipeline_run") not in html
    assert post.status_code == 403 and not PipelineRun.objects.exists()
    client.force_login(world.stranger)
    assert client.post(version_url("pipeline_run")).status_code == 404


def test_run_form_starts_a_run_with_only_the_changed_params(
    client: Any, world: Any, demo: Any
) -> None:
    client.force_login(world.editor)
    data = {"prep.rows": "10", "train.hidden": "128", "train.lr": "0.1", "reuse": "on"}

    response = client.post(version_url("pipeline_run"), data)

    run = PipelineRun.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("runs:detail", args=["lab", run.pk])
    assert run.param_overrides == {"train.hidden": 128} and run.reuse
    assert run.created_by == world.editor
    assert StepRun.objects.get(run=run, name="train").params == {"hidden": 128, "lr": 0.1}


def test_run_form_shows_a_bad_value_next_to_its_field(client: Any, world: Any, demo: Any) -> None:
    client.force_login(world.editor)

    response = client.post(version_url("pipeline_run"), {"train.hidden": "many"})

    html = text(response)
    assert response.status_code == 400 and not PipelineRun.objects.exists()
    errors = html.index('id="id_train.hidden-errors"')
    assert html.index('id="id_train.hidden"') < errors < html.index('id="id_train.lr"')
    assert 'aria-invalid="true" aria-describedby="id_train.hidden-errors"' in html
    assert 'value="many"' in html  # what was typed stays


# --- clone and edit ------------------------------------------------------------------------------
def test_clone_form_offers_the_spec_as_yaml(client: Any, world: Any, demo: Any) -> None:
    client.force_login(world.editor)

    html = text(client.get(version_url("pipeline_clone")))

    assert '<textarea name="spec" id="id_spec"' in html
    assert "train:\n    module: train@1" in html and "hidden: 32" in html


def test_clone_and_edit_saves_a_child_version(client: Any, world: Any, demo: Any) -> None:
    client.force_login(world.editor)
    spec = SPEC.replace("hidden: 32", "hidden: 48")

    response = client.post(version_url("pipeline_clone"), {"spec": spec, "message": "wider"})

    new = PipelineVersion.objects.get(pipeline__name="classify", number=2)
    assert response.status_code == 302 and response.url == version_url(number=2)
    assert new.parent == demo["version"] and new.message == "wider"
    assert new.spec["steps"]["train"]["params"] == {"hidden": 48}


def test_clone_errors_are_shown_next_to_the_spec_with_their_paths(
    client: Any, world: Any, demo: Any
) -> None:
    client.force_login(world.editor)
    spec = SPEC.replace("hidden: 32", "hidden: lots, nope: 1")

    response = client.post(version_url("pipeline_clone"), {"spec": spec})

    html = text(response)
    assert response.status_code == 400
    assert PipelineVersion.objects.filter(pipeline__name="classify").count() == 1
    errors = html.split('id="id_spec-errors"')[1].split("</ul>")[0]
    assert "steps.train.params.hidden:" in errors and "steps.train.params.nope:" in errors
    assert html.index('<textarea name="spec"') < html.index('id="id_spec-errors"')
    assert "hidden: lots, nope: 1" in html  # the text stays as typed


def test_clone_of_an_unchanged_spec_says_so(client: Any, world: Any, demo: Any) -> None:
    client.force_login(world.editor)

    response = client.post(version_url("pipeline_clone"), {"spec": SPEC}, follow=True)

    assert "No change" in text(response)
    assert PipelineVersion.objects.filter(pipeline__name="classify").count() == 1


def test_viewer_cannot_open_the_clone_form(client: Any, world: Any, demo: Any) -> None:
    client.force_login(world.viewer)

    assert client.get(version_url("pipeline_clone")).status_code == 403


# --- pipeline detail: the version tree ------------------------------------------------------------
def test_pipeline_page_shows_versions_as_a_tree(client: Any, world: Any, demo: Any) -> None:
    ws = world.workspace
    v2 = pipeline_version_create(ws, "classify", SPEC.replace("32", "48"), parent=demo["version"])
    pipeline_version_create(ws, "classify", SPEC.replace("32", "64"), parent=demo["version"])
    pipeline_version_create(ws, "classify", SPEC.replace("32", "96"), parent=v2)
    client.force_login(world.viewer)

    html = text(client.get(reverse("pipelines:pipeline", args=["lab", "classify"])))

    order = [int(n) for n in re.findall(r'</span>(?:└ )?<a href="[^"]*classify/(\d)/">', html)]
    assert order == [1, 3, 2, 4]  # v1, then its children newest first, v4 under v2
    assert html.count("└ ") == 3


def test_versions_that_sweeps_and_the_workbench_made_are_folded_away(
    client: Any, world: Any, demo: Any
) -> None:
    ws = world.workspace
    for n, origin in ((48, VersionOrigin.SWEEP), (64, VersionOrigin.WORKBENCH)):
        pipeline_version_create(
            ws, "classify", SPEC.replace("32", str(n)), parent=demo["version"], origin=origin
        )
    client.force_login(world.viewer)
    url = reverse("pipelines:pipeline", args=["lab", "classify"])

    folded = text(client.get(url))
    unfolded = text(client.get(url + "?all=1"))

    rows = r'</span>(?:└ )?<a href="[^"]*classify/(\d)/">'
    assert re.findall(rows, folded) == ["1"]
    assert "2 versions made by sweeps and workbench tries are folded away" in folded
    assert re.findall(rows, unfolded) == ["1", "3", "2"]
    assert '<span class="tag">sweep</span>' in unfolded
    assert '<span class="tag">workbench</span>' in unfolded


def test_pipeline_diff_shows_what_changed_in_the_steps_and_the_spec(
    client: Any, world: Any, demo: Any
) -> None:
    ws = world.workspace
    edited = SPEC.replace("train@1", "train@2").replace("{hidden: 32}", "{hidden: 32, epochs: 3}")
    edited = edited.replace(
        "inputs: {train: prep.train}", "inputs: {train: prep.train, labels: prep.train}"
    )
    pipeline_version_create(ws, "classify", edited, parent=demo["version"])
    client.force_login(world.viewer)
    url = reverse("pipelines:pipeline_diff", args=["lab", "classify"])

    default = text(client.get(url))  # the latest against its parent
    chosen = text(client.get(url + "?a=2&b=1"))
    same = text(client.get(url + "?a=1&b=1"))
    tree = text(client.get(reverse("pipelines:pipeline", args=["lab", "classify"])))

    assert "classify: @1 → @2" in default
    assert "module train@1 → train@2; params epochs; input labels: — → prep.train" in default
    assert '<span class="add">+' in default and "epochs: 3" in default
    assert "classify: @2 → @1" in chosen and "input labels: prep.train → —" in chosen
    assert "resolve to the same spec" in same and "nothing changed" in same
    assert f"{url}?a=1&amp;b=2" in tree


# --- modules: code, diff, usage, breakage -------------------------------------------------------
def test_module_version_page_highlights_code_and_lists_where_it_is_used(
    client: Any, world: Any, demo: Any
) -> None:
    client.force_login(world.viewer)

    html = text(client.get(reverse("pipelines:module_version", args=["lab", "train", 1])))

    assert '<div class="code" data-lang="python"><pre><code>OUTPUTS' in html
    assert "/static/vendor/highlight.min.js" in html
    assert re.search(r'classify@1</a></td><td class="mono">train</td>', html)


def test_module_version_page_says_which_pipelines_a_new_version_breaks(
    client: Any, world: Any, demo: Any
) -> None:
    client.force_login(world.viewer)

    html = text(client.get(reverse("pipelines:module_version", args=["lab", "train", 2])))

    assert "input &#x27;labels&#x27; added" in html and "output &#x27;model&#x27; removed" in html
    assert "breaks" in html
    assert "does not bind the new required input &#x27;labels&#x27;" in html
    assert "does not set the required param &#x27;epochs&#x27;" in html


def test_module_diff_shows_changed_lines(client: Any, world: Any, demo: Any) -> None:
    client.force_login(world.viewer)
    url = reverse("pipelines:module_diff", args=["lab", "train"])

    html = text(client.get(url, {"a": 1, "b": 2}))
    default = text(client.get(url))
    junk = client.get(url, {"a": "../x", "b": "99"})

    assert "train: @1 → @2" in html and "train: @1 → @2" in default
    assert '<span class="del">-OUTPUTS = (&#x27;model&#x27;,)</span>' in html
    assert '<span class="add">+OUTPUTS = (&#x27;weights&#x27;,)</span>' in html
    assert junk.status_code == 200


def test_interface_changes_and_binding_problems_are_pure() -> None:
    old = {"inputs": ["x"], "outputs": ["y"], "params": {"k": {"type": "int", "default": 1}}}
    new = {"inputs": ["x", "z"], "outputs": [], "params": {"k": {"type": "float", "default": 1}}}

    assert interface_changes(old, new) == [
        "input 'z' added",
        "output 'y' removed",
        "param 'k': type int -> float",
    ]
    assert binding_problems(new, {"inputs": {"x": "a.b"}, "params": {"q": 1}}, {"y"}) == [
        "does not bind the new required input 'z'",
        "a downstream step reads output 'y', which the module lacks",
        "sets param 'q', which the module no longer has",
    ]


def test_workspace_home_links_runs_to_the_explorer(client: Any, world: Any, demo: Any) -> None:
    client.force_login(world.editor)
    client.post(version_url("pipeline_run"), {})
    run = PipelineRun.objects.get()

    html = text(client.get(reverse("runs:workspace", args=["lab"])))

    assert f'<a href="{reverse("runs:detail", args=["lab", run.pk])}">#{run.pk}</a>' in html
    assert reverse("runs:list", args=["lab"]) in html
