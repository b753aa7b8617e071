"""manage.py seed_demo: the demo workspace, its data, step code and pipeline (idempotent).

Creates, or finds and leaves as they are: the user `demo` (password `demo`), the workspace
`demo` owned by that user, the dataset `digits` from scikit-learn's bundled copy, every module
in `examples/` and the pipeline `classify`. A second run creates nothing. No runs: the
server enqueues the first demo run once it listens.

Each thing is matched by content, not only compared with the latest version, so a user who
pushes `train_mlp@3` or edits `classify` in the demo does not make the next `make run`
re-push the seeded copies on top of their work.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from pipelines_app import services
from pipelines_app.models import DatasetVersion, ModuleVersion, PipelineVersion
from pipelines_app.specs import Catalogue, ModuleInfo, resolve_spec
from stepworks.outputs import PARQUET, PARQUET_ROW_GROUP_ROWS
from workspaces.errors import DomainError
from workspaces.models import Membership, Role, Workspace
from workspaces.services import membership_set, workspace_create

DEMO_USER = "demo"
DEMO_PASSWORD = "demo"  # printed by the command: a demo login, to change on a shared host
WORKSPACE_SLUG = "demo"
DATASET = "digits"
PIPELINE = "classify"


@dataclass(frozen=True)
class DemoModule:
    name: str
    folder: str  # under examples/
    entrypoint: str
    message: str


# Push order matters: train_mlp_v2 is pushed after train_mlp, so it becomes train_mlp@2.
DEMO_MODULES = (
    DemoModule("prep_standardize", "prep_standardize", "prep.py:prep", "Split, then standardize"),
    DemoModule("prep_minmax", "prep_minmax", "prep.py:prep", "Split, then min-max scale"),
    DemoModule("prep_pca", "prep_pca", "prep.py:prep", "Split, standardize, PCA to 16"),
    DemoModule("augment_none", "augment_none", "augment.py:augment", "No augmentation"),
    DemoModule("augment_noise", "augment_noise", "augment.py:augment", "Gaussian-noise copies"),
    DemoModule("train_logreg", "train_logreg", "train.py:train", "Logistic regression"),
    DemoModule("train_rf", "train_rf", "train.py:train", "Random forest"),
    DemoModule("train_mlp", "train_mlp", "train.py:train", "One-hidden-layer MLP, 64 units"),
    DemoModule("train_mlp", "train_mlp_v2", "train.py:train", "Wider by default: 128 units"),
    DemoModule("evaluate", "evaluate", "evaluate.py:evaluate", "Accuracy, F1, confusion"),
)


def examples_dir() -> Path:
    return Path(settings.BASE_DIR) / "examples"


def digits_parquet() -> bytes:
    """scikit-learn's digits (64 feature columns, then `target`) as Parquet bytes.

    The same bytes on every call, so re-seeding finds the stored version by its sha256:
    fixed writer options, no pandas index, and no pandas metadata (it names the pandas
    version, which would change the bytes on an upgrade for no change in the data).
    """
    try:
        # scikit-learn is in the `steps` extra, not the web's dependencies: import it here.
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise CommandError("seed_demo needs scikit-learn: pip install -e '.[steps]'") from exc
    frame = load_digits(as_frame=True).frame
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        compression="snappy",
        row_group_size=PARQUET_ROW_GROUP_ROWS,
        version="2.6",
        write_statistics=True,
    )
    return sink.getvalue()


def module_files(module: DemoModule) -> dict[str, str]:
    """The module's one file, as `module_version_create_from_dir` reads the folder (bytes
    decoded as they are: read_text would turn CRLF into LF and change the digest)."""
    folder = examples_dir() / module.folder
    filename = module.entrypoint.split(":")[0]
    return {filename: (folder / filename).read_bytes().decode("utf-8")}


class Command(BaseCommand):
    help = "Create the demo user, workspace, dataset, modules and pipeline (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = self._user()
            workspace = self._workspace(user)
            dataset_version = self._dataset(workspace, user)
            pushed = self._modules(workspace, user)
            self._pipeline(workspace, user, pushed, dataset_version)
        except DomainError as exc:
            raise CommandError(f"seed_demo: {exc} {getattr(exc, 'fields', '')}") from exc
        self.stdout.write(
            f"Sign in as {DEMO_USER} / {DEMO_PASSWORD}; run the demo with "
            f"`manage.py run_pipeline {WORKSPACE_SLUG} {PIPELINE} --wait`."
        )

    def _say(self, created: bool, what: str) -> None:
        self.stdout.write(f"{'created' if created else 'found  '} {what}")

    def _user(self) -> Any:
        users = get_user_model()
        user = users.objects.filter(username=DEMO_USER).first()
        if user is None:
            user = users.objects.create_user(DEMO_USER, password=DEMO_PASSWORD)
            self._say(True, f"user {DEMO_USER} (password: {DEMO_PASSWORD})")
        else:
            # Never reset a password someone may have changed.
            self._say(
                False, f"user {DEMO_USER} (password left as it is; seeded as {DEMO_PASSWORD})"
            )
        return user

    def _workspace(self, user: Any) -> Workspace:
        workspace = Workspace.objects.filter(slug=WORKSPACE_SLUG).first()
        if workspace is None:
            workspace = workspace_create(WORKSPACE_SLUG, "Demo", owner=user, check_policy=False)
            self._say(True, f"workspace {WORKSPACE_SLUG} (owner {DEMO_USER})")
            return workspace
        self._say(False, f"workspace {WORKSPACE_SLUG}")
        if not Membership.objects.filter(workspace=workspace, user=user).exists():
            membership_set(workspace, user, Role.OWNER)
            self._say(True, f"membership {DEMO_USER} as owner of {WORKSPACE_SLUG}")
        return workspace

    def _dataset(self, workspace: Workspace, user: Any) -> DatasetVersion:
        data = digits_parquet()
        sha256 = hashlib.sha256(data).hexdigest()
        found = (
            DatasetVersion.objects.filter(
                dataset__workspace=workspace,
                dataset__name=DATASET,
                artifact__sha256=sha256,
                artifact__media_type=PARQUET,
            )
            .select_related("dataset")
            .order_by("number")
            .first()
        )
        if found is not None:
            self._say(False, f"dataset {found.ref}")
            return found
        version = services.dataset_version_create(
            workspace,
            DATASET,
            data,
            PARQUET,
            message="scikit-learn's digits: 1,797 8x8 images (64 features) and their target",
            user=user,
        )
        self._say(True, f"dataset {version.ref} ({len(data):,} bytes of Parquet)")
        return version

    def _modules(self, workspace: Workspace, user: Any) -> dict[str, ModuleVersion]:
        """Push every demo module unless a version with its code exists; {name: last one}."""
        pushed: dict[str, ModuleVersion] = {}
        for module in DEMO_MODULES:
            digest = services.module_code_digest(module_files(module), module.entrypoint)
            version = (
                ModuleVersion.objects.filter(
                    module__workspace=workspace, module__name=module.name, code_digest=digest
                )
                .select_related("module")
                .order_by("number")
                .first()
            )
            created = version is None
            if version is None:
                version = services.module_version_create_from_dir(
                    workspace,
                    module.name,
                    examples_dir() / module.folder,
                    module.entrypoint,
                    message=module.message,
                    user=user,
                )
                if version.code_digest != digest:
                    # The folder holds more than its one file: the next seed would push again.
                    raise CommandError(
                        f"examples/{module.folder} must hold only {module_files(module)}"
                    )
            self._say(created, f"module {version.ref} (examples/{module.folder})")
            pushed[module.name] = version
        return pushed

    def _pipeline(
        self,
        workspace: Workspace,
        user: Any,
        pushed: dict[str, ModuleVersion],
        dataset_version: DatasetVersion,
    ) -> PipelineVersion:
        spec = self._pinned_spec(pushed, dataset_version)
        # Every ref is pinned, so this catalogue resolves it exactly as the service will.
        catalogue = Catalogue(
            modules={name: {v.number: ModuleInfo(v.pk, v.interface)} for name, v in pushed.items()},
            datasets={DATASET: {dataset_version.number: dataset_version.pk}},
        )
        digest = resolve_spec(spec, catalogue).digest
        found = (
            PipelineVersion.objects.filter(
                pipeline__workspace=workspace, pipeline__name=PIPELINE, digest=digest
            )
            .select_related("pipeline")
            .order_by("number")
            .first()
        )
        if found is not None:
            self._say(False, f"pipeline {found.ref}")
            return found
        version = services.pipeline_version_create(
            workspace,
            PIPELINE,
            spec,
            message="The demo: standardize, noise copies, MLP (128 units), evaluate",
            user=user,
        )
        steps = ", ".join(f"{s.name}={s.module_version}" for s in version.steps.all())
        self._say(True, f"pipeline {version.ref}: {steps}")
        return version

    def _pinned_spec(
        self, pushed: dict[str, ModuleVersion], dataset_version: DatasetVersion
    ) -> dict[str, Any]:
        """examples/classify.yaml with each `@latest` replaced by the version seeded here.

        Pinned, the spec's digest does not depend on what users pushed since, so a re-seed
        finds the version it made instead of adding one that uses their newest code.
        """
        spec: dict[str, Any] = yaml.safe_load(
            (examples_dir() / "classify.yaml").read_text(encoding="utf-8")
        )
        dataset_latest = f"dataset:{DATASET}@latest"
        for step in spec["steps"].values():
            name, _, number = step["module"].partition("@")
            if number == "latest" and name in pushed:
                step["module"] = pushed[name].ref
            inputs = step.get("inputs") or {}
            for key, binding in inputs.items():
                if binding == dataset_latest:
                    inputs[key] = dataset_version.ref
        return spec
