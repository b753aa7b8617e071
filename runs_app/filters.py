"""The runs list's filters: status, pipeline, version, sweep, user, date (django-filter).

The form is a GET form, so the URL keeps the filters (and pagination keeps them with
`{% querystring %}`). An invalid value is reported on its field and ignored, never a 500.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django import forms

from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun, RunStatus


class RunFilter(django_filters.FilterSet):  # type: ignore[misc]
    status = django_filters.MultipleChoiceFilter(
        choices=RunStatus.choices, widget=forms.CheckboxSelectMultiple
    )
    pipeline = django_filters.ChoiceFilter(
        field_name="pipeline_version__pipeline__name", empty_label="any pipeline"
    )
    version = django_filters.NumberFilter(field_name="pipeline_version__number", min_value=1)
    sweep = django_filters.NumberFilter(field_name="sweep_id", min_value=1)
    user = django_filters.CharFilter(field_name="created_by__username")
    created = django_filters.DateFromToRangeFilter(
        field_name="created_at",
        widget=django_filters.widgets.DateRangeWidget(attrs={"type": "date"}),
    )

    class Meta:
        model = PipelineRun
        fields: list[str] = []

    def __init__(self, data: Any = None, *args: Any, workspace: Any = None, **kwargs: Any) -> None:
        super().__init__(data, *args, **kwargs)
        names = Pipeline.objects.filter(workspace=workspace).order_by("name")
        self.filters["pipeline"].extra["choices"] = [
            (name, name) for name in names.values_list("name", flat=True)
        ]
