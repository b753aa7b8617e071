"""Previews by media type: bounded heads of tables and text, JSON trees, sanitised markdown,
images, user HTML/SVG/plotly only in the sandboxed frame, pickles never opened."""

from __future__ import annotations

import io
import pathlib
import pickle
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from django.urls import reverse

from artifacts.http import FRAME_CSP
from artifacts.previews import artifact_preview, json_tree
from artifacts.store import artifact_store_bytes
from stepworks.outputs import PARQUET_ROW_GROUP_ROWS

pytestmark = pytest.mark.django_db


def store(world: Any, data: bytes, media_type: str) -> Any:
    return artifact_store_bytes(world.workspace, data, media_type)


def page(client: Any, world: Any, artifact: Any) -> str:
    client.force_login(world.viewer)
    response = client.get(reverse("runs:artifact", args=["lab", artifact.sha256]))
    assert response.status_code == 200
    return response.content.decode()


def parquet_bytes(rows: int) -> bytes:
    frame = pd.DataFrame(
        {"id": np.arange(rows), "score": np.linspace(0, 1, rows), "label": ["<b>x</b>"] * rows}
    )
    sink = io.BytesIO()
    frame.to_parquet(sink, engine="pyarrow", row_group_size=PARQUET_ROW_GROUP_ROWS)
    return sink.getvalue()


def test_parquet_preview_reads_one_batch_with_types_and_the_row_count(
    client: Any, world: Any
) -> None:
    artifact = store(world, parquet_bytes(150_000), "application/vnd.apache.parquet")

    preview = artifact_preview(artifact)
    html = page(client, world, artifact)

    assert preview["row_count"] == 150_000 and len(preview["rows"]) == 20
    assert [c["type"] for c in preview["columns"]] == ["int64", "double", "large_string"] or [
        c["type"] for c in preview["columns"]
    ] == ["int64", "double", "string"]
    assert preview["rows"][1][0] == "1"
    assert "150,000 rows" in html and "the first 20 shown" in html
    assert '<th scope="col">score<small>double</small></th>' in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html


def test_csv_preview_reads_a_bounded_head(world: Any) -> None:
    big = "a,b,c\n" + "".join(f"{i},{i * 0.5},name{i}\n" for i in range(100_000))
    small = "a,b\n1,x\n2,y\n"

    head = artifact_preview(store(world, big.encode(), "text/csv"))
    whole = artifact_preview(store(world, small.encode(), "text/csv"))

    assert [c["type"] for c in head["columns"]] == ["int", "float", "str"]
    assert len(head["rows"]) == 20 and not head["row_count_exact"]
    assert 1000 < head["row_count"] < 100_000  # a lower bound from the head alone
    assert whole["row_count"] == 2 and whole["row_count_exact"]


def test_json_preview_is_a_collapsible_tree(client: Any, world: Any) -> None:
    data = b'{"metrics": {"accuracy": 0.97, "labels": [1, 2, 3]}, "note": "<script>x</script>"}'
    artifact = store(world, data, "application/json")

    html = page(client, world, artifact)

    assert '<ul class="json-tree"><li><details open><summary>' in html
    assert '<span class="json-key">accuracy</span>: <span class="json-value">0.97</span>' in html
    assert "[…] 3 items" in html
    assert "&quot;&lt;script&gt;x&lt;/script&gt;&quot;" in html and "<script>x" not in html


def test_json_tree_stops_at_its_node_budget() -> None:
    tree = json_tree(list(range(5000)))

    assert tree["size"] == 5000 and tree["hidden"] > 0
    assert len(tree["children"]) + tree["hidden"] == 5000


def test_markdown_is_rendered_and_sanitised(client: Any, world: Any) -> None:
    text = (
        "# Report\n\nSome *text*.\n\n<script>alert(1)</script>\n\n"
        "[click](javascript:alert(1)) <img src=x onerror=alert(1)>\n"
    )
    artifact = store(world, text.encode(), "text/markdown")

    html = page(client, world, artifact)

    preview = html.split('<div class="markdown-preview">')[1].split("</div>")[0]
    assert "<h1>Report</h1>" in preview and "<em>text</em>" in preview
    assert "<script" not in preview and 'href="javascript:' not in preview
    assert "&lt;script&gt;" in preview  # raw HTML stays text
    assert "onerror" not in preview.replace("&lt;img src=x onerror=alert(1)&gt;", "")


def test_text_preview_is_bounded_and_escaped(client: Any, world: Any) -> None:
    artifact = store(world, b"<b>bold</b>\n" + b"x" * 200_000, "text/plain; charset=utf-8")

    preview = artifact_preview(artifact)
    html = page(client, world, artifact)

    assert preview["truncated"] and len(preview["text"]) == 64 * 1024
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "download it for the rest" in html


@pytest.mark.parametrize(
    ("media_type", "data"),
    [
        ("text/html", b"<h1>hi</h1><script>parent.document.title='pwned'</script>"),
        (
            "image/svg+xml",
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        ),
    ],
)
def test_html_and_svg_render_only_in_the_sandboxed_frame(
    client: Any, world: Any, media_type: str, data: bytes
) -> None:
    artifact = store(world, data, media_type)

    html = page(client, world, artifact)
    frame = client.get(
        reverse("runs:artifact_frame", args=["lab", artifact.sha256]), HTTP_SEC_FETCH_DEST="iframe"
    )

    frame_url = reverse("runs:artifact_frame", args=["lab", artifact.sha256])
    assert re.search(
        rf'<iframe class="preview-frame" sandbox="allow-scripts"[^>]*src="{frame_url}"', html
    )
    assert data.decode() not in html  # never inline on the app's page
    assert frame.status_code == 200 and frame.content == data
    policy = frame["Content-Security-Policy"]
    assert policy.startswith("sandbox allow-scripts;")
    assert "allow-same-origin" not in policy
    for directive in ("default-src 'none'", "connect-src 'none'", "form-action 'none'"):
        assert directive in policy
    assert frame["X-Frame-Options"] == "SAMEORIGIN"
    assert frame["X-Content-Type-Options"] == "nosniff"
    image = client.get(reverse("runs:artifact_image", args=["lab", artifact.sha256]))
    assert image.status_code == 404  # never served as an image on the app's origin


def test_plotly_figure_renders_in_the_frame_from_escaped_json(client: Any, world: Any) -> None:
    figure = (
        b'{"data": [{"type": "bar", "y": [1, 2]}], '
        b'"layout": {"title": {"text": "</script><script>alert(1)</script>"}}}'
    )
    artifact = store(world, figure, "application/vnd.plotly.v1+json")
    client.force_login(world.viewer)

    frame = client.get(
        reverse("runs:artifact_frame", args=["lab", artifact.sha256]), HTTP_SEC_FETCH_DEST="iframe"
    )

    body = frame.content.decode()
    assert frame["Content-Security-Policy"] == FRAME_CSP
    assert '<script id="figure" type="application/json">' in body
    assert "\\u003C/script\\u003E\\u003Cscript\\u003Ealert(1)" in body
    assert "/static/vendor/plotly.min.js" in body


def test_png_is_shown_inline_with_nosniff(client: Any, world: Any) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
    artifact = store(world, png, "image/png")

    html = page(client, world, artifact)
    image = client.get(reverse("runs:artifact_image", args=["lab", artifact.sha256]))

    assert f'src="{reverse("runs:artifact_image", args=["lab", artifact.sha256])}"' in html
    assert image.status_code == 200 and b"".join(image.streaming_content) == png
    assert image["Content-Type"] == "image/png" and image["X-Content-Type-Options"] == "nosniff"


class Booby:
    """Unpickling this touches a file: the proof that something unpickled it."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (pathlib.Path.touch, (self.marker,))


def test_pickles_are_download_only_and_never_unpickled(
    client: Any, world: Any, tmp_path: pathlib.Path
) -> None:
    marker = tmp_path / "unpickled"
    artifact = store(world, pickle.dumps(Booby(marker)), "application/x-python-pickle")

    html = page(client, world, artifact)
    download = client.get(reverse("runs:artifact_download", args=["lab", artifact.sha256]))
    b"".join(download.streaming_content)
    frame = client.get(
        reverse("runs:artifact_frame", args=["lab", artifact.sha256]), HTTP_SEC_FETCH_DEST="iframe"
    )

    assert "never opened here" in html
    assert download["Content-Disposition"].endswith('.pkl"')
    assert frame.status_code == 404
    assert not marker.exists()


def test_npy_preview_reads_the_header_and_a_head(world: Any) -> None:
    sink = io.BytesIO()
    np.save(sink, np.arange(300, dtype=np.float32).reshape(100, 3))

    preview = artifact_preview(store(world, sink.getvalue(), "application/x-npy"))

    assert preview["shape"] == [100, 3] and preview["dtype"] == "float32"
    assert preview["rows"][:2] == [["0.0", "1.0", "2.0"], ["3.0", "4.0", "5.0"]]
    assert len(preview["rows"]) == 20


def test_a_corrupt_file_shows_an_error_not_a_500(client: Any, world: Any) -> None:
    artifact = store(world, b"not parquet at all", "application/vnd.apache.parquet")

    html = page(client, world, artifact)

    assert "The preview could not be read" in html


def test_unknown_types_say_download_instead(client: Any, world: Any) -> None:
    html = page(client, world, store(world, b"\x00\x01", "application/octet-stream"))

    assert "No preview for application/octet-stream; download it" in html


def test_artifact_page_names_producers_consumers_and_draws_lineage(client: Any, world: Any) -> None:
    from runs_app.models import StepOutput
    from tests.test_explorer_pages import finished_run

    run = finished_run(world.workspace)
    out = StepOutput.objects.get(step__run=run, step__name="s1")

    html = page(client, world, out.artifact)

    assert reverse("runs:step", args=["lab", run.pk, "s1"]) in html  # produced by
    assert reverse("runs:step", args=["lab", run.pk, "s2"]) in html  # consumed by
    lineage = re.search(
        r'<script id="artifact-lineage" type="application/json">(.*?)</script>', html
    )
    assert lineage and '"kind": "output"' in lineage.group(1)
    assert "out.json" in html


def test_the_frame_opened_as_a_document_shows_the_artifact_page_not_its_content(
    client: Any, world: Any
) -> None:
    data = b"<html><script>top.location='https://evil.example/'</script></html>"
    artifact = store(world, data, "text/html")
    client.force_login(world.viewer)
    url = reverse("runs:artifact_frame", args=["lab", artifact.sha256])

    for destination in ("document", None):
        extra = {"HTTP_SEC_FETCH_DEST": destination} if destination else {}
        opened = client.get(url, **extra)
        assert opened.status_code == 302, destination
        assert opened["Location"] == reverse("runs:artifact", args=["lab", artifact.sha256])
        assert data not in opened.content
    client.force_login(world.stranger)
    assert client.get(url).status_code == 404  # another workspace's artifact is not even redirected
