"""The data spec: what the user declares (DataSpec, presets) and what was decided (ResolvedSpec)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.form import form_schema

MISSING_LEVEL = "missing"  # the category that stands for a missing categorical cell
ROW_KEY = "row"  # the key column when the file has no id column: 0-based file position

PresetName = Literal["jh-simple"]
# Fields the preset fixes: setting any of them next to `preset` is refused.
_SCHEMA_FIELDS = (
    "target", "task", "id_column", "categorical", "numeric", "drop", "zscore", "scaling",
    "numeric_missing", "categorical_missing", "missing", "na_values", "group_column", "loss",
)  # fmt: skip


class DataSpec(BaseModel):
    """What the user says about their table; anything left out is inferred from the data."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra=form_schema(("target", "task"))
    )

    preset: PresetName | None = Field(
        default=None,
        description="A known data set whose schema is fixed (jh-simple = the T81-558 notebook); "
        "used when no target is given.",
    )
    target: str | None = Field(default=None, description="The column to predict.")
    task: Literal["auto", "classification", "regression"] = Field(
        default="auto",
        description="auto: text or integer targets with <= 20 values are classes, "
        "other numbers regression.",
    )
    id_column: str | None = Field(
        default=None,
        description="Unique row id (kept exactly, never a feature); none = the one unique "
        "column named id, ID or <name>_id if there is one, else the row number.",
    )
    categorical: list[str] = Field(
        default=[], description="Columns to one-hot encode even if they look numeric."
    )
    numeric: list[str] = Field(default=[], description="Columns that must be numbers.")
    drop: list[str] = Field(default=[], description="Columns to ignore.")
    zscore: list[str] | None = Field(
        default=None,
        description="Numeric columns to z-score; none = every numeric column when scaling=zscore.",
    )
    scaling: Literal["zscore", "none"] = Field(
        default="zscore", description="Scale numeric columns to mean 0, std 1, or leave them raw."
    )
    numeric_missing: Literal["median", "error"] = Field(
        default="median", description="Missing numbers: fill with the median, or refuse the file."
    )
    categorical_missing: Literal["missing", "error"] = Field(
        default="missing",
        description="Missing categories: their own 'missing' level, or refuse the file.",
    )
    missing: dict[str, Literal["median", "error", "missing"]] = Field(
        default={}, description="Per-column missing-value policy, overriding the two above."
    )
    preprocess_scope: Literal["fold", "global"] | None = Field(
        default=None,
        description="Fit medians and scales per fold on training rows (fold) or on the whole file "
        "(global, the notebook's way); none = global for the preset, fold otherwise.",
    )
    max_categories: int = Field(
        default=200, ge=2, description="Refuse a categorical column with more levels than this."
    )
    max_cell_chars: int = Field(
        default=1000, ge=1, description="Refuse a cell longer than this many characters."
    )
    delimiter: str | None = Field(
        default=None, description="CSV field separator; none = detect among , ; tab |."
    )
    na_values: list[str] = Field(
        default=[], description="Extra cell texts meaning missing (blank, NA, null... always are)."
    )
    group_column: str | None = Field(
        default=None, description="Rows sharing a value stay in one fold (group k-fold)."
    )
    loss: Literal["mse", "mae", "huber"] = Field(
        default="mse", description="Regression loss (ignored for classification)."
    )

    @model_validator(mode="after")
    def _preset_fixes_the_schema(self) -> DataSpec:
        implied = self.preset is None and self.target is None
        if self.active_preset is not None:
            fields = type(self).model_fields
            changed = [n for n in _SCHEMA_FIELDS if getattr(self, n) != fields[n].default]
            if changed:
                why = "no target is given, so " if implied else ""
                raise ValueError(
                    f"{why}preset {self.active_preset!r} is used and it fixes the schema; remove "
                    f"{changed}, or give a target (and no preset) to describe your own data"
                )
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ValueError(f"delimiter must be one character, got {self.delimiter!r}")
        return self

    def resolved_scope(self) -> Literal["fold", "global"]:
        """Global for the preset (the notebook fits on the whole file), fold otherwise."""
        if self.preprocess_scope is not None:
            return self.preprocess_scope
        return "global" if self.active_preset is not None else "fold"

    @property
    def active_preset(self) -> PresetName | None:
        """The preset in force: the one named, or jh-simple when no target is given."""
        if self.preset is None and self.target is None:
            return "jh-simple"  # no target: the bundled data set, as the notebook
        return self.preset


def preset_spec(name: PresetName) -> DataSpec:
    """The fully declared spec a preset stands for, so one code path handles every table."""
    if name != "jh-simple":
        raise ValueError(f"unknown preset {name!r}")
    return DataSpec(
        target="product",
        task="classification",
        id_column="id",
        categorical=["job", "area"],
        numeric=[
            "income",
            "aspect",
            "subscriptions",
            "dist_healthy",
            "save_rate",
            "dist_unhealthy",
            "age",
            "pop_dense",
            "retail_dense",
            "crime",
        ],  # fmt: skip
        zscore=["income", "aspect", "save_rate", "age", "subscriptions"],
        numeric_missing="error",
        missing={"income": "median"},
        na_values=["NA", "?"],
        preprocess_scope="global",
    )


def expand_preset(spec: DataSpec) -> DataSpec:
    """The declared spec to resolve: a preset's expansion, keeping the user's limits and scope."""
    if spec.active_preset is None:
        return spec
    base = preset_spec(spec.active_preset)
    return base.model_copy(
        update={
            "preprocess_scope": spec.resolved_scope(),
            "max_categories": spec.max_categories,
            "max_cell_chars": spec.max_cell_chars,
            "delimiter": spec.delimiter,
        }
    )


@dataclass(frozen=True)
class ResolvedSpec:
    """Every decision about the table, inferred or declared, frozen and JSON-able for the cache."""

    target: str
    task: Literal["classification", "regression"]
    task_reason: str
    key: str
    id_column: str | None
    numeric: list[str]
    zscore: list[str]
    categorical: list[str]
    vocabularies: dict[str, list[str]]
    classes: list[str]
    missing_policy: dict[str, str]
    dropped: dict[str, str]
    scope: Literal["fold", "global"]
    group_column: str | None
    loss: str
    n_rows: int
    excluded_target_rows: int
    preset: str | None = None
    id_dtype: Literal["int64", "string"] = "string"
    warnings: list[str] = field(default_factory=list)
    # feature columns with gaps: {"cells": n, "with": "median" | "level", "value": ...}
    missing_filled: dict[str, dict[str, Any]] = field(default_factory=dict)

    def features(self) -> list[str]:
        """Numeric columns, then each categorical column's one-hot columns in vocabulary order."""
        dummies = [f"{c}_{v}" for c in self.categorical for v in self.vocabularies[c]]
        return [*self.numeric, *dummies]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (for the cache's metadata and the run report)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResolvedSpec:
        """Rebuild from `to_dict()` output (after a JSON round trip)."""
        return cls(**data)


def declared_spec(resolved: ResolvedSpec, base: DataSpec) -> DataSpec:
    """The spec that declares everything `resolved` decided: save it, edit it, pass it back."""
    if resolved.preset is not None:
        return base
    return base.model_copy(
        update={
            "preset": None,
            "target": resolved.target,
            "task": resolved.task,
            "id_column": resolved.id_column,
            "categorical": list(resolved.categorical),
            "numeric": list(resolved.numeric),
            "drop": [c for c in resolved.dropped if c not in (resolved.id_column,)],
            "zscore": list(resolved.zscore),
            "missing": dict(resolved.missing_policy),
            "preprocess_scope": resolved.scope,
            "group_column": resolved.group_column,
        }
    )


__all__ = [
    "MISSING_LEVEL",
    "ROW_KEY",
    "DataSpec",
    "ResolvedSpec",
    "declared_spec",
    "expand_preset",
    "preset_spec",
]
