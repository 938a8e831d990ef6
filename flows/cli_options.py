"""The command line's options, derived from the typed config: one option per config field."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tasks.config import (
    CVConfig,
    DownloadConfig,
    ExecutionConfig,
    ModelConfig,
    PoolConfig,
    PredictConfig,
    ServeConfig,
)
from tasks.data.spec import DataSpec
from tasks.errors import PermanentError

# Where each config section's fields land on the command line: (section, model, option prefix).
# Top-level scalar fields of CVConfig have section None. Every option is derived from a field:
# adding a field to a model adds its option, with the field's description and default.
SECTIONS: tuple[tuple[str | None, type[BaseModel], str], ...] = (
    (None, CVConfig, ""),
    ("model", ModelConfig, ""),
    ("execution", ExecutionConfig, ""),
    ("data", DataSpec, ""),
    ("download", DownloadConfig, "download-"),
)
# `foldflow predict`: the same derivation over PredictConfig.
PREDICT_SECTIONS: tuple[tuple[str | None, type[BaseModel], str], ...] = (
    (None, PredictConfig, ""),
    ("download", DownloadConfig, "download-"),
)
# `foldflow workers start|stop`: a warm pool's own settings.
POOL_SECTIONS: tuple[tuple[str | None, type[BaseModel], str], ...] = ((None, PoolConfig, ""),)
# `foldflow serve`: what the serve process adds beside its runs' config (--warm-workers).
SERVE_SECTIONS: tuple[tuple[str | None, type[BaseModel], str], ...] = ((None, ServeConfig, ""),)
# Shorter names kept from earlier versions of the CLI.
RENAMED = {"hidden_units": "hidden", "fold_retries": "retries"}
# Values with a syntax of their own on the command line.
PARSERS: dict[str, Callable[[str], Any]] = {"gpus": lambda text: _gpus(text)}
GROUP_TITLES = {
    None: "run",
    "data": "data (your own table; no --target = the jh-simple preset)",
    "model": "model",
    "execution": "execution",
    "download": "download",
}


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.replace(" ", "").split(",") if part]


def _strs(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _unwrap(annotation: Any) -> Any:
    """The annotation without Optional[...] and Annotated[...] wrappers."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _argument_kwargs(
    name: str, info: FieldInfo, default: Any = None
) -> dict[str, Any] | None:
    """argparse keyword arguments for one pydantic field (None: not settable from the CLI)."""
    kind = _unwrap(info.annotation)
    if default is None:
        default = info.get_default(call_default_factory=True)
    shown = "none" if default is None else default
    if isinstance(shown, list):
        shown = ",".join(map(str, shown)) or "none"
    help_text = f"{info.description or name.replace('_', ' ')} (default: {shown})"
    kwargs: dict[str, Any] = {"help": help_text}
    if name in PARSERS:
        return {**kwargs, "type": PARSERS[name], "metavar": name.upper()}
    if kind is bool:
        return {**kwargs, "action": argparse.BooleanOptionalAction, "default": None}
    if get_origin(kind) is Literal:
        return {**kwargs, "choices": list(get_args(kind))}
    if get_origin(kind) is list:
        item = _unwrap(get_args(kind)[0])
        return {**kwargs, "type": _ints if item is int else _strs, "metavar": "A,B,..."}
    if get_origin(kind) is dict:
        return {**kwargs, "type": json.loads, "metavar": "JSON"}
    if kind in (int, float, str):
        return {**kwargs, "type": kind, "metavar": name.split("_")[-1].upper()}
    return None  # a nested model: its own section


def _dest(section: str | None, name: str) -> str:
    return f"{section}.{name}" if section else name


def add_config_options(
    parser: argparse.ArgumentParser,
    sections: tuple = SECTIONS,
    kind: str = "CVConfig",
    defaults: dict[str, Any] | None = None,
    title: str | None = None,
) -> None:
    """One option per field of the config models, grouped by section.

    `defaults` (by dest) are the command's own defaults where they differ from the field's,
    for the help text; `kind=""`: no --config option (a second set on a parser that has one).
    """
    if kind:
        parser.add_argument(
            "--config", help=f"JSON or YAML file with a {kind}; options override it"
        )
    for section, model, prefix in sections:
        group = parser.add_argument_group(title or GROUP_TITLES[section])
        for name, info in model.model_fields.items():
            kwargs = _argument_kwargs(name, info, (defaults or {}).get(_dest(section, name)))
            if kwargs is None:
                continue
            flag = "--" + prefix + RENAMED.get(name, name).replace("_", "-")
            group.add_argument(flag, dest=_dest(section, name), **kwargs)


def add_model_options(
    parser: argparse.ArgumentParser, model: type[BaseModel], section: str, title: str,
    skip: tuple[str, ...] = (),
) -> None:
    """One option per field of one more config model (e.g. TuneConfig's), in its own group."""
    group = parser.add_argument_group(title)
    for name, info in model.model_fields.items():
        kwargs = None if name in skip else _argument_kwargs(name, info)
        if kwargs is not None:
            group.add_argument("--" + name.replace("_", "-"), dest=_dest(section, name), **kwargs)


def model_values(args: argparse.Namespace, model: type[BaseModel], section: str) -> dict[str, Any]:
    """The options of `add_model_options` that were given, by field name."""
    opts = vars(args)
    return {
        name: opts[_dest(section, name)]
        for name in model.model_fields
        if opts.get(_dest(section, name)) is not None
    }


def _gpus(text: str | None) -> list[int] | None:
    from tasks.devices import parse_gpus

    return parse_gpus(text)


class ConfigFileError(PermanentError):
    """A config or grid file that cannot be parsed: the error names the file and the line."""


def load_file(path: str) -> Any:
    """A YAML (.yaml/.yml) or JSON file's content; a syntax error names the file and line."""
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        try:
            return yaml.safe_load(text) or {}
        except yaml.MarkedYAMLError as err:
            raise ConfigFileError(f"{path}: not valid YAML: {_yaml_problem(err)}") from None
        except yaml.YAMLError as err:
            raise ConfigFileError(f"{path}: not valid YAML: {err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigFileError(
            f"{path}: not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}"
        ) from None


def _yaml_problem(err: Any) -> str:
    """PyYAML's problem and context on one line, with 1-based lines (it counts from 0)."""

    def at(mark: Any) -> str:
        return f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""

    text = f"{err.problem or 'syntax error'}{at(err.problem_mark)}"
    if err.context:
        text += f" ({err.context}{at(err.context_mark)})"
    return text


def config_from_args(
    args: argparse.Namespace,
    sections: tuple = SECTIONS,
    config_type: type[BaseModel] = CVConfig,
    use_file: bool = True,
) -> Any:
    """Merge a config file (if any) with the command-line options into one validated config.

    `use_file=False`: the options only (the parser's --config file is another config's).
    """
    base: dict[str, Any] = load_file(args.config) if use_file and args.config else {}
    opts = vars(args)
    for section, model, _ in sections:
        values = {
            name: opts[_dest(section, name)]
            for name in model.model_fields
            if opts.get(_dest(section, name)) is not None
        }
        if section is None:
            base.update(values)
        elif values:
            base[section] = {**base.get(section, {}), **values}
    return config_type.model_validate(base)
