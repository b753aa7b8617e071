"""Make a database as it was before the layered apps, and read one back afterwards.

    python -m tests.legacy_db build   (DJANGO_SETTINGS_MODULE=tests.legacy_settings)
    python -m tests.legacy_db read    (the real settings, after `migrate`)

`build` migrates with the old migration files and writes rows through the models of the old
head's migration state (not today's model classes). `read` prints, as JSON, those rows read
with today's models, the content types and the schema, for tests/test_migrations_layered.py.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import django


def build() -> None:
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    call_command("migrate", verbosity=0)
    apps = MigrationExecutor(connection).loader.project_state().apps
    content_types = apps.get_model("contenttypes", "ContentType")
    # An old install never had the apps made since; `migrate` registered their models too.
    content_types.objects.filter(app_label__in=["workspaces", "artifacts"]).delete()

    user = apps.get_model("auth", "User").objects.create(username="ada")
    workspace = apps.get_model("pipelines_app", "Workspace").objects.create(slug="lab", name="Lab")
    apps.get_model("pipelines_app", "Membership").objects.create(
        user=user, workspace=workspace, role="owner"
    )
    artifact = apps.get_model("runs_app", "Artifact").objects.create(
        workspace=workspace, sha256="a" * 64, size=3, media_type="text/csv", storage_name="aa/a"
    )
    dataset = apps.get_model("pipelines_app", "Dataset").objects.create(
        workspace=workspace, name="iris"
    )
    apps.get_model("pipelines_app", "DatasetVersion").objects.create(
        dataset=dataset, number=1, artifact=artifact, created_by=user
    )
    module = apps.get_model("pipelines_app", "Module").objects.create(
        workspace=workspace, name="prep", created_by=user
    )
    module_version = apps.get_model("pipelines_app", "ModuleVersion").objects.create(
        module=module,
        number=1,
        entrypoint="prep:run",
        files={"prep.py": "def run():\n    pass\n"},
        code_digest="c" * 64,
        interface={"inputs": {}, "outputs": {}, "params": {}},
        created_by=user,
    )
    pipeline = apps.get_model("pipelines_app", "Pipeline").objects.create(
        workspace=workspace, name="flow", created_by=user
    )
    version = apps.get_model("pipelines_app", "PipelineVersion").objects.create(
        pipeline=pipeline, number=1, spec={"steps": []}, digest="d" * 64, created_by=user
    )
    run = apps.get_model("runs_app", "PipelineRun").objects.create(
        workspace=workspace, pipeline_version=version, status="succeeded", created_by=user
    )
    step = apps.get_model("runs_app", "StepRun").objects.create(
        workspace=workspace,
        run=run,
        name="prep",
        position=0,
        module_version=module_version,
        status="succeeded",
    )
    apps.get_model("runs_app", "StepOutput").objects.create(
        step=step, name="table", artifact=artifact
    )


def read() -> dict[str, Any]:
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection

    from pipelines_app.models import DatasetVersion
    from runs_app.models import StepOutput
    from workspaces.models import Membership

    membership = Membership.objects.select_related("workspace", "user").get()
    dataset_version = DatasetVersion.objects.select_related("artifact__workspace").get()
    output = StepOutput.objects.select_related("step__run", "artifact").get()
    return {
        "membership": [membership.user.username, membership.workspace.slug, membership.role],
        "dataset_version": [
            dataset_version.number,
            dataset_version.artifact.sha256,
            dataset_version.artifact.workspace.slug,
        ],
        "step_output": [output.step.run.status, output.step.name, output.artifact.sha256],
        "content_types": sorted(
            f"{ct.app_label}.{ct.model}"
            for ct in ContentType.objects.filter(model__in=["workspace", "membership", "artifact"])
        ),
        "schema": schema(connection),
    }


def schema(connection: Any) -> dict[str, Any]:
    """Every table's columns (name, type, null) and constraints (name, columns, kind)."""
    introspection = connection.introspection
    tables = {}
    with connection.cursor() as cursor:
        for table in sorted(introspection.table_names(cursor)):
            columns = [
                [column.name, column.type_code, bool(column.null_ok)]
                for column in introspection.get_table_description(cursor, table)
            ]
            constraints = {
                name: [
                    constraint["columns"],
                    bool(constraint["primary_key"]),
                    bool(constraint["unique"]),
                    bool(constraint["foreign_key"]),
                    bool(constraint["check"]),
                    bool(constraint["index"]),
                ]
                for name, constraint in introspection.get_constraints(cursor, table).items()
            }
            tables[table] = {"columns": sorted(map(str, columns)), "constraints": constraints}
    return tables


if __name__ == "__main__":
    django.setup()
    if sys.argv[1:] == ["build"]:
        build()
    elif sys.argv[1:] == ["read"]:
        json.dump(read(), sys.stdout)
    else:
        sys.exit("usage: python -m tests.legacy_db build|read")
