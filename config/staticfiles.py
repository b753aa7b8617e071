"""Static files that come from installed packages rather than from a copy in git.

plotly.js is the one: the `plotly` Python package (a dependency, which also writes the
figures users' steps return) bundles the matching `plotly.min.js` (4.6 MB). `PlotlyFinder`
serves that file as `vendor/plotly.min.js`, so `collectstatic` copies it (hashed by the
manifest storage, cached for a year by whitenoise) and a fresh clone needs no copy of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import CheckMessage, Error
from django.core.files.storage import FileSystemStorage

PLOTLY_STATIC_PATH = "vendor/plotly.min.js"


def plotly_bundle() -> Path:
    """The installed plotly package's own `plotly.min.js` (it may not exist: see check)."""
    import plotly

    return Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


class PlotlyFinder(BaseFinder):
    """Finds `vendor/plotly.min.js` in the installed plotly package, and nothing else of
    its `package_data` folder (which also holds datasets and a 4.8 MB widget bundle)."""

    def check(self, **kwargs: Any) -> list[CheckMessage]:
        if plotly_bundle().is_file():
            return []
        return [
            Error(
                f"The installed plotly package has no {plotly_bundle()}.",
                hint="Reinstall plotly (pip install --force-reinstall plotly).",
                id="stepworks.E001",
            )
        ]

    def find(self, path: str, find_all: bool = False, **kwargs: Any) -> Any:
        bundle = plotly_bundle()
        if path != PLOTLY_STATIC_PATH or not bundle.is_file():
            return []  # as Django's own finders answer "not here" (None would be a match)
        return [str(bundle)] if find_all else str(bundle)

    def list(self, ignore_patterns: Any) -> Iterator[tuple[str, FileSystemStorage]]:
        bundle = plotly_bundle()
        if not bundle.is_file():
            return
        folder, name = PLOTLY_STATIC_PATH.rsplit("/", 1)
        storage = FileSystemStorage(location=str(bundle.parent))
        # collectstatic and whitenoise put a storage's `prefix` before the path, as they do
        # for a STATICFILES_DIRS entry given as (prefix, folder).
        storage.prefix = folder  # type: ignore[attr-defined]
        yield name, storage
