"""Tags and a note on every run: the API, the run page's in-place edit, the runs list's
tags, and `stepworks tag` / `stepworks note`."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from runs_app.models import PipelineRun, RunTag
from tests.helpers import api_token
from tests.test_api_support import api_client, error_of
from tests.test_cli import Cli, cli  # noqa: F401 (the fixture)
from tests.test_explorer_pages import finished_run, text

API = "/api/v1/workspaces/lab"

db = pytest.mark.django_db


def tags_of(run: PipelineRun) -> list[str]:
    return sorted(RunTag.objects.filter(run=run).values_list("name", flat=True))


# --- the API -------------------------------------------------------------------------------------
@db
def test_put_sets_tags_and_note_and_get_reads_them_back(world: Any) -> None:
    run = finished_run(world.workspace)
    client = api_client(world.editor)
    url = f"{API}/runs/{run.pk}/annotations/"

    put = client.put(
        url, {"tags": ["baseline", " paper:fig-3 ", "baseline"], "note": "first"}, format="json"
    )
    got = client.get(url)

    assert put.status_code == 200, put.content
    assert put.json() == {"run": run.pk, "tags": ["baseline", "paper:fig-3"], "note": "first"}
    assert got.json() == put.json()
    run.refresh_from_db()
    assert run.note == "first" and tags_of(run) == ["baseline", "paper:fig-3"]
    assert RunTag.objects.get(run=run, name="baseline").created_by == world.editor
    detail = client.get(f"{API}/runs/{run.pk}/").json()
    assert detail["tags"] == ["baseline", "paper:fig-3"] and detail["note"] == "first"


@db
def test_put_changes_only_what_it_gives_and_add_remove_change_the_set(world: Any) -> None:
    run = finished_run(world.workspace)
    client = api_client(world.editor)
    url = f"{API}/runs/{run.pk}/annotations/"
    client.put(url, {"tags": ["a", "b"], "note": "kept"}, format="json")

    added = client.put(
        url, {"add": ["c", "a"], "remove": ["b", "never-there"]}, format="json"
    ).json()
    replaced = client.put(url, {"tags": ["z"]}, format="json").json()
    cleared = client.put(url, {"note": ""}, format="json").json()

    assert added == {"run": run.pk, "tags": ["a", "c"], "note": "kept"}
    assert replaced == {"run": run.pk, "tags": ["z"], "note": "kept"}
    assert cleared == {"run": run.pk, "tags": ["z"], "note": ""}
    run.refresh_from_db()
    assert tags_of(run) == ["z"] and run.note == ""


@db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tags": ["ok", "has space"]}, "tags"),
        ({"tags": ["-leading-dash"]}, "tags"),
        ({"tags": ["x" * 51]}, "tags"),
        ({"tags": [f"t{i}" for i in range(21)]}, "tags"),
        ({"add": ["bad/slash"]}, "add"),
        ({"note": "x" * 10_001}, "note"),
        ({"tags": "not-a-list"}, "tags"),
    ],
)
def test_a_bad_tag_or_a_too_long_note_is_a_400_naming_it_and_writes_nothing(
    world: Any, body: dict[str, Any], field: str
) -> None:
    run = finished_run(world.workspace)
    RunTag.objects.create(run=run, name="before")
    client = api_client(world.editor)

    response = client.put(f"{API}/runs/{run.pk}/annotations/", body, format="json")

    assert response.status_code == 400
    assert field in error_of(response)["fields"]
    run.refresh_from_db()
    assert tags_of(run) == ["before"] and run.note == ""


@db
def test_a_viewer_may_read_but_not_annotate_and_a_stranger_gets_404(world: Any) -> None:
    run = finished_run(world.workspace)
    url = f"{API}/runs/{run.pk}/annotations/"

    viewer_put = api_client(world.viewer).put(url, {"tags": ["x"]}, format="json")
    viewer_get = api_client(world.viewer).get(url)
    stranger_put = api_client(world.stranger).put(url, {"tags": ["x"]}, format="json")
    stranger_get = api_client(world.stranger).get(url)

    assert viewer_put.status_code == 403 and viewer_get.status_code == 200
    assert stranger_put.status_code == 404 and stranger_get.status_code == 404
    assert tags_of(run) == []


# --- the run page --------------------------------------------------------------------------------
@db
def test_the_run_page_shows_tags_and_note_and_a_viewer_no_edit_link(
    client: Any, world: Any
) -> None:
    run = finished_run(world.workspace)
    RunTag.objects.create(run=run, name="baseline")
    PipelineRun.objects.filter(pk=run.pk).update(note="the <b>good</b> one")
    client.force_login(world.viewer)

    html = text(client.get(reverse("runs:detail", args=["lab", run.pk])))

    assert '<a class="tag" href="/w/lab/runs/?filter=tag%20%3D%20baseline"' in html
    assert '<div class="run-note">the &lt;b&gt;good&lt;/b&gt; one</div>' in html
    assert "Edit tags and note" not in html


@db
def test_an_editor_edits_tags_and_note_in_place(client: Any, world: Any) -> None:
    run = finished_run(world.workspace)
    client.force_login(world.editor)
    url = reverse("runs:annotations", args=["lab", run.pk])
    htmx = {"HTTP_HX_REQUEST": "true"}

    page = text(client.get(reverse("runs:detail", args=["lab", run.pk])))
    form = client.get(url, {"edit": "1"}, **htmx)
    saved = client.post(url, {"tags": "baseline, fast  small", "note": "line 1\r\nline 2"}, **htmx)

    assert f'hx-get="{url}?edit=1"' in page and 'hx-target="#run-annotations"' in page
    assert form.status_code == 200
    assert '<form id="run-annotations"' in text(form) and 'name="csrfmiddlewaretoken"' in text(form)
    assert "<html" not in text(form)  # a fragment to swap in, not a page
    assert saved.status_code == 200
    assert '<section id="run-annotations"' in text(saved) and ">fast</a>" in text(saved)
    run.refresh_from_db()
    assert tags_of(run) == ["baseline", "fast", "small"] and run.note == "line 1\nline 2"


@db
def test_a_bad_tag_in_the_page_shows_the_form_again_and_saves_nothing(
    client: Any, world: Any
) -> None:
    run = finished_run(world.workspace)
    client.force_login(world.editor)
    url = reverse("runs:annotations", args=["lab", run.pk])

    swapped = client.post(url, {"tags": "ok b@d", "note": "n"}, HTTP_HX_REQUEST="true")
    plain = client.post(url, {"tags": "ok b@d", "note": "n"})

    assert swapped.status_code == 200  # htmx swaps only a 2xx: the form comes back with errors
    assert "tags: &#x27;b@d&#x27;: a tag is 1-50 letters" in text(swapped)
    assert 'value="ok b@d"' in text(swapped) and "data-error-summary" in text(swapped)
    assert plain.status_code == 400 and "<html" in text(plain)
    run.refresh_from_db()
    assert tags_of(run) == [] and run.note == ""


@db
def test_without_javascript_the_edit_link_is_a_page_and_saving_goes_back_to_the_run(
    client: Any, world: Any
) -> None:
    run = finished_run(world.workspace)
    client.force_login(world.editor)
    url = reverse("runs:annotations", args=["lab", run.pk])

    page = client.get(url, {"edit": "1"})
    saved = client.post(url, {"tags": "x", "note": ""})

    assert page.status_code == 200 and "<html" in text(page) and 'name="tags"' in text(page)
    assert saved.status_code == 302 and saved["Location"] == f"/w/lab/runs/{run.pk}/"
    assert tags_of(run) == ["x"]


@db
def test_a_nul_in_the_page_note_is_refused_not_a_500(client: Any, world: Any) -> None:
    run = finished_run(world.workspace)
    client.force_login(world.editor)

    response = client.post(
        reverse("runs:annotations", args=["lab", run.pk]),
        {"tags": "", "note": "a\x00b"},
        HTTP_HX_REQUEST="true",
    )

    assert response.status_code == 200 and "cannot hold a NUL" in text(response)
    run.refresh_from_db()
    assert run.note == ""


@db
def test_a_viewer_cannot_open_the_edit_form_or_save(client: Any, world: Any) -> None:
    run = finished_run(world.workspace)
    client.force_login(world.viewer)
    url = reverse("runs:annotations", args=["lab", run.pk])

    assert client.get(url).status_code == 200  # the display part
    assert client.get(url, {"edit": "1"}).status_code == 403
    assert client.post(url, {"tags": "x"}).status_code == 403
    assert tags_of(run) == []


# --- the runs list -------------------------------------------------------------------------------
@db
def test_the_runs_list_shows_each_runs_tags_and_the_api_lists_them(client: Any, world: Any) -> None:
    a = finished_run(world.workspace)
    b = finished_run(world.workspace, a.pipeline_version)
    RunTag.objects.create(run=a, name="baseline")
    RunTag.objects.create(run=a, name="alpha")
    client.force_login(world.viewer)

    html = text(client.get(reverse("runs:list", args=["lab"])))
    listed = api_client(world.viewer).get(f"{API}/runs/").json()["results"]

    assert '<span class="tag">alpha</span> <span class="tag">baseline</span>' in html
    assert {row["id"]: row["tags"] for row in listed} == {a.pk: ["alpha", "baseline"], b.pk: []}


# --- the CLI -------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_stepworks_tag_and_note_change_and_print_them(cli: Any, world: Any) -> None:  # noqa: F811
    run = finished_run(world.workspace)
    rid = str(run.pk)

    tagged = cli("tag", rid, "baseline", "fast")
    removed = cli.json("tag", rid, "--remove", "fast", "-r", "small")
    listed = cli("tag", rid)
    noted = cli("note", rid, "the one for the paper")
    read = cli("note", rid)
    shown = cli("show", rid)
    bad = cli("tag", rid, "b@d", code=2)
    cleared = cli.json("note", rid, "--clear")
    found = cli.json("runs", "--filter", "tag = baseline")

    assert f"run {rid}: baseline, fast" in tagged.stdout
    assert removed == {"run": run.pk, "tags": ["baseline"], "note": ""}
    assert f"run {rid}: baseline" in listed.stdout
    assert "note saved" in noted.stdout and read.stdout == "the one for the paper\n"
    assert "tags: baseline" in shown.stdout and "note: the one for the paper" in shown.stdout
    assert "'b@d': a tag is 1-50 letters" in bad.output
    assert cleared["note"] == ""
    assert [row["id"] for row in found] == [run.pk] and found[0]["tags"] == ["baseline"]
    run.refresh_from_db()
    assert tags_of(run) == ["baseline"] and run.note == ""


@pytest.mark.django_db(transaction=True)
def test_a_viewer_cannot_tag_exit_3(world: Any, live_server: Any, tmp_path: Any) -> None:
    run = finished_run(world.workspace)
    viewer = Cli(tmp_path / "viewer")
    viewer("login", live_server.url, "--token", api_token(world.viewer))

    viewer("tag", str(run.pk), "x", code=3)
    viewer("note", str(run.pk), "x", code=3)

    assert tags_of(run) == []
