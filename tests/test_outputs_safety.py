"""What a step hands back is checked before the store reads it: a directory output holds
only regular files and folders, and a media type that is not type/subtype is never stored
or sent as a header (issue 10: a symlink made the store serve a file outside it; a CR/LF
media type made every download of the artifact a 500)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from artifacts.store import valid_media_type
from runs_app import scheduler
from runs_app.executor.runner import StepExecutor
from runs_app.models import StepLog
from runs_app.worker import StepLogWriter, WorkerServices
from stepworks.outputs import OutputError, OutputFile, directory_files
from tests.factories import chain
from tests.test_executor import run_step


@pytest.mark.parametrize(
    ("media_type", "ok"),
    [
        ("text/csv", True),
        ("text/plain; charset=utf-8", True),
        ('text/plain; charset="utf-8"', True),
        ("application/vnd.plotly.v1+json", True),
        ("text/html\r\nSet-Cookie: x=1", False),
        ("text/csv\n", False),
        ("text", False),
        ("text/plain; charset", False),
        ("a/" + "b" * 120, False),
    ],
)
def test_a_media_type_is_type_slash_subtype_with_plain_params(media_type: str, ok: bool) -> None:
    assert valid_media_type(media_type) is ok


def test_a_directory_of_files_and_folders_is_listed_in_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.txt").write_text("x")
    (tmp_path / "a.txt").write_text("a")
    os.link(tmp_path / "a.txt", tmp_path / "b" / "same-a.txt")  # a link inside is fine

    found = directory_files(tmp_path, "d")

    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.txt",
        "b/same-a.txt",
        "b/x.txt",
    ]


def test_a_symlink_a_fifo_and_an_outside_hard_link_are_refused_by_name(tmp_path: Path) -> None:
    secret = tmp_path / "secret_key"
    secret.write_text("s3cret")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "link").symlink_to(secret)
    with pytest.raises(OutputError, match=r"'d': link is not a regular file"):
        directory_files(folder, "d")

    (folder / "link").unlink()
    os.mkfifo(folder / "pipe")
    with pytest.raises(OutputError, match=r"'d': pipe is not a regular file"):
        directory_files(folder, "d")

    (folder / "pipe").unlink()
    os.link(secret, folder / "copy")
    with pytest.raises(OutputError, match=r"'d': copy is a hard link to a file outside"):
        directory_files(folder, "d")


def test_a_step_returning_a_folder_with_a_symlink_fails_naming_the_entry(
    tmp_path: Path,
) -> None:
    source = f"""
        from pathlib import Path

        def main(ctx):
            folder = Path(ctx.work_dir) / "bundle"
            folder.mkdir()
            (folder / "ok.txt").write_text("fine")
            (folder / "key").symlink_to({str(tmp_path / "outside")!r})
            return {{"bundle": folder}}
    """
    (tmp_path / "outside").write_text("not the step's")
    with StepExecutor() as executor:
        result = run_step(executor, tmp_path, source, outputs=("bundle",))

    assert (result.status, result.reason) == ("failed", "output_invalid")
    assert "output 'bundle': key is not a regular file or a folder" in result.message


def test_the_worker_stores_a_malformed_media_type_as_octet_stream_and_says_so(
    world: Any, tmp_path: Path
) -> None:
    run = scheduler.run_create(chain(world.workspace, length=1), user=world.owner)
    step = run.steps.get()
    data = tmp_path / "out.bin"
    data.write_bytes(b"<script>alert(1)</script>")
    logs = StepLogWriter(step.pk, 1)

    artifact = WorkerServices._store_output(  # no services state is involved
        None,  # type: ignore[arg-type]
        step,
        "page",
        OutputFile(data, "text/html\r\nX-Injected: 1"),
        logs,
    )

    assert artifact.media_type == "application/octet-stream"
    log = "".join(StepLog.objects.filter(step=step).values_list("text", flat=True))
    assert "output 'page' declared the media type" in log
    assert "stored as application/octet-stream" in log
