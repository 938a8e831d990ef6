"""The search space of `foldflow tune`: per model field a distribution, checked before any run.

A space is a mapping from `ModelConfig` field names to distributions, in a YAML file:

    regularizer: {choice: [none, l1, l2, l1_l2]}
    l1: {log_float: [1.0e-6, 1.0e-2]}
    dropout: {float: [0.0, 0.5]}
    batch_size: {int: [16, 128]}

or in the long form `{kind: log_float, low: 1.0e-6, high: 1.0e-2}`. Every key and bound is
validated up front (unknown field, low > high, log with low <= 0, an empty choice, a value the
field refuses), and a bad space is a `SearchSpaceError` naming the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tasks.config import ModelConfig
from tasks.errors import PermanentError

# Values Optuna keeps as they are in a categorical distribution; others (lists) become JSON text.
_PLAIN = (type(None), bool, int, float, str)


class SearchSpaceError(PermanentError):
    """The search space cannot be searched: the message names the key and what was expected."""


class LogFloat(BaseModel):
    """A float drawn log-uniformly between low and high (both > 0)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["log_float"] = "log_float"
    low: float
    high: float


class UniformFloat(BaseModel):
    """A float drawn uniformly between low and high (on a grid of `step` if given)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["float"] = "float"
    low: float
    high: float
    step: float | None = Field(default=None, gt=0)


class IntRange(BaseModel):
    """An integer between low and high inclusive (log-uniform if `log`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["int"] = "int"
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False


class Choice(BaseModel):
    """One of the listed values (any the field accepts: text, numbers, lists of units)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["choice"] = "choice"
    values: list[Any]


Distribution = Annotated[LogFloat | UniformFloat | IntRange | Choice, Field(discriminator="kind")]


def _long_form(key: str, value: Any) -> Any:
    """`{log_float: [a, b]}` / `{choice: [...]}` as `{kind: ..., low: a, high: b}` / `values`."""
    if not isinstance(value, dict) or "kind" in value or len(value) != 1:
        return value
    ((kind, args),) = value.items()
    if kind == "choice":
        return {"kind": kind, "values": args}
    if kind in ("log_float", "float", "int"):
        if not isinstance(args, list) or len(args) not in (2, 3):
            raise ValueError(f"{key}: {kind} takes [low, high] or [low, high, step], got {args!r}")
        bounds = {"kind": kind, "low": args[0], "high": args[1]}
        return bounds | ({"step": args[2]} if len(args) == 3 else {})
    raise ValueError(f"{key}: unknown distribution {kind!r}; one of log_float, float, int, choice")


def _field_error(name: str, value: Any) -> str | None:
    """Why ModelConfig's field `name` refuses `value` (None: it accepts it)."""
    try:
        ModelConfig.model_validate({name: value})
    except ValidationError as err:
        for problem in err.errors():
            if problem["loc"][:1] == (name,):
                return problem["msg"]
    return None


def check_distribution(name: str, dist: Any) -> None:
    """Refuse a distribution Optuna cannot draw from or whose values the field would refuse."""
    if name not in ModelConfig.model_fields:
        fields = ", ".join(ModelConfig.model_fields)
        raise ValueError(f"{name!r} is not a model field; the fields are: {fields}")
    if isinstance(dist, Choice):
        if not dist.values:
            raise ValueError(f"{name}: an empty choice; list at least one value")
        candidates = dist.values
    else:
        if dist.low > dist.high:
            raise ValueError(f"{name}: low {dist.low} is above high {dist.high}")
        if (isinstance(dist, LogFloat) or getattr(dist, "log", False)) and dist.low <= 0:
            raise ValueError(f"{name}: a log distribution needs low > 0, got {dist.low}")
        candidates = [dist.low, dist.high]
    for value in candidates:
        why = _field_error(name, value)
        if why:
            raise ValueError(f"{name}: the model field refuses {value!r} ({why})")


def choice_label(value: Any) -> Any:
    """The value as Optuna stores a categorical choice: itself, or JSON text for a list."""
    return value if isinstance(value, _PLAIN) else json.dumps(value)


class SearchSpace(BaseModel):
    """Per model field, the distribution a trial draws it from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    params: dict[str, Distribution] = Field(
        description="ModelConfig field -> distribution (log_float, float, int, choice)."
    )

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("params"), dict):
            return {**data, "params": {k: _long_form(k, v) for k, v in data["params"].items()}}
        return data

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        if not self.params:
            raise ValueError("the search space is empty; give at least one model field")
        for name, dist in self.params.items():
            check_distribution(name, dist)
        return self

    def distributions(self) -> dict[str, Any]:
        """The space as Optuna distributions, for `study.ask(fixed_distributions=...)`."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        out: dict[str, Any] = {}
        for name, d in self.params.items():
            if isinstance(d, Choice):
                out[name] = CategoricalDistribution([choice_label(v) for v in d.values])
            elif isinstance(d, IntRange):
                out[name] = IntDistribution(d.low, d.high, step=d.step, log=d.log)
            elif isinstance(d, LogFloat):
                out[name] = FloatDistribution(d.low, d.high, log=True)
            else:
                out[name] = FloatDistribution(d.low, d.high, step=d.step)
        return out

    def decode(self, params: dict[str, Any]) -> dict[str, Any]:
        """A trial's Optuna params as model field values (JSON-text choices back to lists)."""
        decoded = {}
        for name, value in params.items():
            dist = self.params.get(name)
            if isinstance(dist, Choice):
                value = {choice_label(v): v for v in dist.values}[value]
            decoded[name] = value
        return decoded

    def model_for(self, params: dict[str, Any], base: ModelConfig) -> ModelConfig:
        """The base model with a trial's values (raises ValidationError for a refused mix)."""
        return ModelConfig.model_validate({**base.model_dump(), **self.decode(params)})


DEFAULT_SPACE = SearchSpace(
    params={
        "regularizer": {"choice": ["none", "l1", "l2", "l1_l2"]},
        "regularizer_on": {"choice": ["activity", "kernel"]},
        "l1": {"log_float": [1e-6, 1e-2]},
        "l2": {"log_float": [1e-6, 1e-2]},
        "dropout": {"float": [0.0, 0.5]},
        "hidden_units": {"choice": [[25], [50, 25], [100, 50], [100, 50, 25]]},
        "learning_rate": {"log_float": [1e-4, 1e-2]},
    }
)


def parse_space(mapping: Any, source: str = "the search space") -> SearchSpace:
    """A validated space from a mapping (field -> distribution), or an error naming the key."""
    if isinstance(mapping, dict) and set(mapping) == {"params"}:
        mapping = mapping["params"]
    if not isinstance(mapping, dict):
        raise SearchSpaceError(
            f"{source}: expected a mapping of model fields to distributions, got "
            f"{type(mapping).__name__}"
        )
    try:
        return SearchSpace.model_validate({"params": mapping})
    except ValidationError as err:
        problem = err.errors()[0]
        where = ".".join(str(p) for p in problem["loc"][1:3] if p != "params")
        message = problem["msg"].removeprefix("Value error, ")
        key = f" key {where!r}:" if where and where not in message else ""
        raise SearchSpaceError(f"{source}:{key} {message}") from None


def load_space(path: str) -> SearchSpace:
    """The search space of a YAML (or JSON) file, validated, or an error naming file and key."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise SearchSpaceError(f"search space file {path} does not exist")
    try:
        mapping = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        raise SearchSpaceError(f"{path}: not valid YAML: {err}") from None
    return parse_space(mapping, path)
