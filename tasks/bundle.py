"""The model bundle: what a run trained, saved as .keras + JSON files that need no foldflow pickles.

Layout of `<output-dir>/model/`:
- `fold-<k>.keras` (`fold-<r>.<k>.keras` for repeated k-fold): each fold's network;
- `preprocess-<k>.json` per fold (fold scope) or one `preprocess.json` (global scope): the
  fitted fills, z-scores, vocabularies and classes (`tasks.preprocess` params);
- `full.keras` + `preprocess-full.json` with `--refit`: the model trained on every row;
- `spec.yaml`: the resolved data spec, the declared DataSpec and the model config;
- `manifest.json`: data sha256, config hash, per-fold metrics, package versions and the
  sha256 of every other file. A bundle is checked against it before any scoring.

The folder is staged beside its final place and renamed in whole: an earlier good bundle stays
until the new one is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.clean import CleanedData
from tasks.config import ModelConfig
from tasks.data.spec import DataSpec, ResolvedSpec
from tasks.errors import PermanentError
from tasks.logs import run_logger
from tasks.metrics import RunMetrics
from tasks.model import count_parameters
from tasks.outputs import current_umask, full_disk_named, set_normal_mode
from tasks.train import FoldResult

BUNDLE_DIR = "model"
MANIFEST, SPEC_YAML = "manifest.json", "spec.yaml"
BUNDLE_FORMAT = "foldflow-model-bundle-1"
VERSIONED_PACKAGES = ("tensorflow", "keras", "numpy", "pandas", "foldflow")


class BundleError(PermanentError):
    """A model bundle is incomplete, altered, or does not have the model asked for."""


def fold_name(fold: int, repeat: int = 0) -> str:
    """fold-3, or fold-2.3 for fold 3 of repeat 2 (the fold's task-run label)."""
    return f"fold-{repeat}.{fold}" if repeat else f"fold-{fold}"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_versions() -> dict[str, str | None]:
    """Versions of the packages a bundle's models and params depend on."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _json_text(payload: Any) -> str:
    """Stable JSON text: a rerun with the same results writes the same bytes.

    Keys keep their order: the order of the numeric columns in preprocessing params is the
    order of the model's inputs.
    """
    return json.dumps(payload, indent=2) + "\n"


def bundle_files(
    results: list[FoldResult], refit: FoldResult | None, scope: str
) -> dict[str, bytes]:
    """Every model and preprocessing file of the bundle, by name."""
    files: dict[str, bytes] = {}
    for res in sorted(results, key=lambda r: (r.repeat, r.fold)):
        name = fold_name(res.fold, res.repeat)
        if not res.model_bytes:
            raise BundleError(f"{name}: its result has no saved model (trained by older code?)")
        files[f"{name}.keras"] = res.model_bytes
        if scope == "fold":
            files[f"preprocess-{name.removeprefix('fold-')}.json"] = _json_text(
                res.preprocess
            ).encode()
    if scope == "global" and results:
        files["preprocess.json"] = _json_text(results[0].preprocess).encode()
    if refit is not None:
        files["full.keras"] = refit.model_bytes
        files["preprocess-full.json"] = _json_text(refit.preprocess).encode()
    return files


# Sizing the outputs before any fold trains (an over-estimate: refusing a run that would have
# fitted is cheaper than failing one after every fold trained). A .keras file holds the float32
# weights and the optimizer's slots (Adam: two per weight), its config and metadata (~30 KB).
KERAS_BYTES_PER_PARAMETER = 3 * 4
KERAS_FILE_OVERHEAD = 64 * 1024
OOF_BYTES_PER_CELL = 8 + 24  # Parquet: at most a float64; CSV: a float's shortest repr, a comma
PICTURES_BYTES = 2 * 1024 * 1024  # learning curves and confusion matrix / scatter PNGs


def output_bytes(data: CleanedData, model: ModelConfig, n_models: int, repeats: int = 1) -> int:
    """About how many bytes a run writes into its output folder: OOF table, bundle, pictures."""
    n_outputs = len(data.classes) or 1
    columns = 5 + len(data.classes)  # key, fold, target, predicted, correct|residual, p_<class>
    table = data.n_rows * columns * OOF_BYTES_PER_CELL
    if repeats > 1:
        table += data.n_rows * repeats * (columns + 1) * 8  # the by-repeat Parquet
    parameters = count_parameters(len(data.features), n_outputs, list(model.hidden_units))
    bundle = n_models * (parameters * KERAS_BYTES_PER_PARAMETER + KERAS_FILE_OVERHEAD)
    return int(table + bundle + PICTURES_BYTES)


def _replace_folder(staged: Path, final: Path) -> None:
    """Put a complete staged folder in place; the old folder is removed only after the swap."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old."))
        old.rmdir()
        os.replace(final, old)
    try:
        os.replace(staged, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@task(name="write-model-bundle", task_run_name="write-model-bundle", cache_policy=NO_CACHE)
def write_model_bundle(
    data: CleanedData,
    results: list[FoldResult],
    metrics: RunMetrics,
    output_dir: str,
    model: ModelConfig,
    declared: DataSpec,
    config_hash: str,
    refit: FoldResult | None = None,
) -> str:
    """Keep what was trained, as plain .keras + JSON, so new rows can be scored later."""
    logger = run_logger()
    spec = data.spec
    files = bundle_files(results, refit, spec.scope)
    spec_doc = {
        "format": BUNDLE_FORMAT,
        "spec": spec.to_dict(),
        "data": declared.model_dump(mode="json"),
        "model": model.model_dump(mode="json"),
    }
    import yaml

    files[SPEC_YAML] = yaml.safe_dump(spec_doc, sort_keys=True).encode()
    keep = ("fold", "repeat", "label", "scores", "n_test", "epochs", "final_loss")
    manifest = {
        "format": BUNDLE_FORMAT,
        "task": spec.task,
        "target": spec.target,
        "key": spec.key,
        "classes": list(spec.classes),
        "scope": spec.scope,
        "data_sha256": data.raw_sha256,
        "config_hash": config_hash,
        "folds": [m.model_dump(include=set(keep)) for m in metrics.folds],
        "oof": {"accuracy": metrics.final_accuracy}
        if spec.task == "classification"
        else {"rmse": metrics.rmse, "mae": metrics.mae, "r2": metrics.r2},
        "partial": metrics.partial,
        "full": "full.keras" if refit is not None else None,
        "versions": package_versions(),
        "files": {name: hashlib.sha256(blob).hexdigest() for name, blob in sorted(files.items())},
    }
    files[MANIFEST] = _json_text(manifest).encode()

    final = Path(output_dir) / BUNDLE_DIR
    final.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{BUNDLE_DIR}.", suffix=".tmp"))
    try:
        with full_disk_named(final.parent, f"the model bundle {BUNDLE_DIR}/"):
            for name, blob in files.items():
                (staged / name).write_bytes(blob)
                set_normal_mode(staged / name)
        os.chmod(staged, 0o777 & ~current_umask())  # mkdtemp makes it owner-only
        _replace_folder(staged, final)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    size = sum(len(b) for b in files.values())
    logger.info("Model bundle: %d files, %.0f KB -> %s", len(files), size / 1024, final)
    return str(final)


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk: its manifest and spec, read once."""

    path: str
    manifest: dict[str, Any]
    spec_doc: dict[str, Any]

    @cached_property
    def spec(self) -> ResolvedSpec:
        """The resolved data spec the models were trained with."""
        return ResolvedSpec.from_dict(self.spec_doc["spec"])

    @property
    def declared(self) -> DataSpec:
        """The DataSpec the run declared (how to read a file: delimiter, NA markers)."""
        return DataSpec.model_validate(self.spec_doc["data"])

    def fold_models(self) -> list[str]:
        """The fold models' names (fold-1, ...), in fold order."""
        return [fold_name(f["fold"], f["repeat"]) for f in self.manifest["folds"]]

    def params_file(self, name: str) -> str:
        """The preprocessing file of model `name` (fold-<k>, or full)."""
        if name == "full":
            return "preprocess-full.json"
        if self.manifest["scope"] == "global":
            return "preprocess.json"
        return f"preprocess-{name.removeprefix('fold-')}.json"

    def params(self, name: str) -> dict[str, Any]:
        """The fitted preprocessing params of model `name`."""
        return json.loads((Path(self.path) / self.params_file(name)).read_text())

    def model_file(self, name: str) -> Path:
        """The .keras file of model `name`."""
        return Path(self.path) / f"{name}.keras"


def load_bundle(folder: str) -> Bundle:
    """Read a bundle's manifest and spec after checking every file against the manifest."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise BundleError(f"model bundle {root} not found (a run writes it to <output-dir>/model)")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"model bundle {root} is incomplete: {MANIFEST} is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
        listed: dict[str, str] = manifest["files"]
    except (ValueError, KeyError, TypeError) as err:
        raise BundleError(f"{manifest_path}: not a foldflow bundle manifest ({err})") from err
    for name, expected in sorted(listed.items()):
        path = root / name
        if not path.is_file():
            raise BundleError(f"model bundle {root} is incomplete: {name} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"model bundle {root}: {name} does not match manifest.json "
                f"(sha256 {actual[:12]}…, expected {expected[:12]}…); the file was altered"
            )
    import yaml

    spec_doc = yaml.safe_load((root / SPEC_YAML).read_text())
    return Bundle(path=str(root), manifest=manifest, spec_doc=spec_doc)
