"""Every main page has one breadcrumb trail, in the layout's place: each crumb but the last a
link (Pico spaces its ">" for links, so a text crumb in the middle read "Pipelines>"), the
last the page itself (aria-current), and the trail the one a user would climb."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest
from django.urls import reverse

from runs_app import scheduler
from runs_app.models import StepOutput
from runs_app.sweeps import services as sweep_services
from tests.factories import chain
from tests.helpers import next_queued, succeed
from workspaces.models import Membership, Role

pytestmark = pytest.mark.django_db


class Trails(HTMLParser):
    """The crumbs of each <nav aria-label="breadcrumb">: [(text, href, current), ...]."""

    def __init__(self) -> None:
        super().__init__()
        self.trails: list[list[tuple[str, str | None, bool]]] = []
        self.depth = 0  # inside a breadcrumb nav, how many <nav> deep
        self.crumb: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "nav" and found.get("aria-label") == "breadcrumb":
            self.trails.append([])
            self.depth = 1
        elif self.depth and tag == "li":
            self.crumb = {"text": "", "href": None, "current": False}
        elif self.crumb is not None and tag == "a":
            self.crumb["href"] = found.get("href")
        if self.crumb is not None and found.get("aria-current") == "page":
            self.crumb["current"] = True

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag == "li" and self.crumb is not None:
            self.trails[-1].append((" ".join(self.crumb["text"].split()), *self._rest()))
            self.crumb = None
        elif self.depth and tag == "nav":
            self.depth = 0

    def _rest(self) -> tuple[str | None, bool]:
        assert self.crumb is not None
        return self.crumb["href"], self.crumb["current"]

    def handle_data(self, data: str) -> None:
        if self.crumb is not None:
            self.crumb["text"] += data


def trail_of(html: str, marked: bool | None = True) -> list[tuple[str, str | None, bool]]:
    parser = Trails()
    parser.feed(html)
    assert len(parser.trails) == 1, f"{len(parser.trails)} breadcrumb trails"
    trail = parser.trails[0]
    *up, here = trail
    assert all(href and not current for _, href, current in up), trail  # links, all of them
    assert here[1] is None, trail  # the page itself, not a link
    if marked is not None:
        assert here[2] is marked, trail  # aria-current="page"
    # In the layout's place: before the page's own heading.
    assert html.index('aria-label="breadcrumb"') < html.index("<h1")
    return trail


@pytest.fixture
def pages(world: Any) -> dict[str, list[str]]:
    """{url: the trail's texts} over a small world: a finished 2-step run with outputs, its
    pipeline and modules, a sweep; the pages a user of the workspace opens."""
    # In two workspaces, so the workspaces page lists them (with one it redirects to it).
    Membership.objects.create(user=world.owner, workspace=world.other_workspace, role=Role.VIEWER)
    version = chain(world.workspace, "chain", length=2)
    run = scheduler.run_create(version, user=world.owner)
    while (step := next_queued(run=run)) is not None:
        assert succeed(step, {"out": (b'{"n": 1}', "application/json")})
    sweep = sweep_services.sweep_create(
        version,
        name="k sweep",
        axes={"s1": [{"label": "one"}, {"label": "two", "params": {"k": 1}}]},
        user=world.owner,
    )
    sha = StepOutput.objects.filter(step__run=run).values_list("artifact__sha256", flat=True)[0]
    lab, ws = "lab", "The lab"
    runs = [ws, "Runs", f"Run {run.pk}"]
    return {
        reverse("pipelines:home"): ["Workspaces"],
        reverse("runs:workspace", args=[lab]): ["Workspaces", ws],
        reverse("pipelines:module", args=[lab, "m0"]): [ws, "Modules", "m0"],
        reverse("pipelines:module_version", args=[lab, "m0", 1]): [ws, "Modules", "m0", "@1"],
        reverse("pipelines:module_diff", args=[lab, "m0"]): [ws, "Modules", "m0", "Diff"],
        reverse("pipelines:pipeline", args=[lab, "chain"]): [ws, "Pipelines", "chain"],
        reverse("runs:pipeline_version", args=[lab, "chain", 1]): [ws, "Pipelines", "chain", "@1"],
        reverse("pipelines:pipeline_diff", args=[lab, "chain"]): [ws, "Pipelines", "chain", "Diff"],
        reverse("pipelines:pipeline_clone", args=[lab, "chain", 1]): [
            ws,
            "Pipelines",
            "chain",
            "@1",
            "Clone and edit",
        ],
        reverse("runs:list", args=[lab]): [ws, "Runs"],
        reverse("runs:compare", args=[lab]): [ws, "Runs", "Compare"],
        reverse("runs:detail", args=[lab, run.pk]): runs,
        reverse("runs:lineage", args=[lab, run.pk]): [*runs, "Lineage"],
        reverse("runs:clone", args=[lab, run.pk]): [*runs, "Clone with changes"],
        reverse("runs:step", args=[lab, run.pk, "s1"]): [*runs, "s1"],
        reverse("runs:workbench", args=[lab, run.pk, "s1"]): [*runs, "s1", "Workbench"],
        reverse("runs:artifact", args=[lab, sha]): [ws, "Storage", sha[:12]],
        reverse("runs:storage", args=[lab]): [ws, "Storage"],
        reverse("runs:retention", args=[lab]): [ws, "Runs", "Retention"],
        reverse("runs:sweep_list", args=[lab]): [ws, "Sweeps"],
        reverse("runs:sweep_new", args=[lab]): [ws, "Sweeps", "New sweep"],
        reverse("runs:sweep_detail", args=[lab, sweep.pk]): [ws, "Sweeps", "k sweep"],
        reverse("runs:sweep_compare", args=[lab, sweep.pk]): [ws, "Sweeps", "k sweep", "Compare"],
        reverse("account-tokens"): ["Workspaces", "API tokens"],
        reverse("account-password"): ["Workspaces", "API tokens", "Password"],
        "/w/lab/no-such-page/": ["Workspaces", "Not found"],
    }


def test_every_main_page_has_one_trail_of_links_ending_at_itself(
    client: Any, world: Any, pages: dict[str, list[str]]
) -> None:
    client.force_login(world.owner)

    for url, expected in pages.items():
        response = client.get(url)
        assert response.status_code in (200, 404), (url, response.status_code)
        trail = trail_of(response.content.decode(), marked=True)
        assert [text for text, _, _ in trail] == expected, url


def test_each_crumb_links_to_the_page_it_names(
    client: Any, world: Any, pages: dict[str, list[str]]
) -> None:
    client.force_login(world.owner)
    step = reverse("runs:step", args=["lab", next(iter(_runs(pages))), "s1"])

    trail = trail_of(client.get(step).content.decode())

    hrefs = {text: href for text, href, _ in trail}
    run = next(iter(_runs(pages)))
    assert hrefs["The lab"] == reverse("runs:workspace", args=["lab"])
    assert hrefs["Runs"] == reverse("runs:list", args=["lab"])
    assert hrefs[f"Run {run}"] == reverse("runs:detail", args=["lab", run])
    module = trail_of(client.get(reverse("pipelines:module", args=["lab", "m0"])).content.decode())
    assert dict((t, h) for t, h, _ in module)["Modules"] == "/w/lab/#modules"
    for url in pages:
        for _, href, _ in trail_of(client.get(url).content.decode(), marked=None)[:-1]:
            assert client.get(href.split("#")[0]).status_code == 200, (url, href)


def _runs(pages: dict[str, list[str]]) -> list[int]:
    return [int(t[-1].split()[-1]) for t in pages.values() if t[-1].startswith("Run ")]
