"""How the Prefect UI's run form shows a config: allowed ranges, and the usual fields first.

The ranges come from the fields' own constraints (`ge`, `le`, `gt`, `lt`, `min_length`): the
one definition of each setting; the UI's form sorts fields by their schema `position`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def allowed_range(prop: dict[str, Any]) -> str:
    """'1–100000', '≥ 0', '> 0', '0 ≤ x < 1', 'at least 1 item' of a JSON-schema property."""
    for option in prop.get("anyOf", []):  # Optional[int]: the constraints sit on the int
        if option.get("type") != "null" and (found := allowed_range(option)):
            return found
    low = prop.get("minimum", prop.get("exclusiveMinimum"))
    high = prop.get("maximum", prop.get("exclusiveMaximum"))
    low_op = "≤" if "minimum" in prop else "<"
    high_op = "≤" if "maximum" in prop else "<"
    if low is not None and high is not None:
        if low_op == high_op == "≤":
            return f"{_number(low)}–{_number(high)}"
        return f"{_number(low)} {low_op} x {high_op} {_number(high)}"
    if low is not None:
        return f"{'≥' if low_op == '≤' else '>'} {_number(low)}"
    if high is not None:
        return f"{'≤' if high_op == '≤' else '<'} {_number(high)}"
    if prop.get("minItems"):
        return f"at least {prop['minItems']} item" + ("s" if prop["minItems"] > 1 else "")
    return ""


def form_schema(first: tuple[str, ...] = ()) -> Callable[[dict[str, Any]], None]:
    """A model's `json_schema_extra`: each range in its field's description, `first` on top."""

    def extra(schema: dict[str, Any]) -> None:
        properties = schema.get("properties", {})
        for position, name in enumerate(first):
            properties[name]["position"] = position
        for prop in properties.values():
            shown = allowed_range(prop)
            if shown:
                prop["description"] = f"{prop.get('description', '')} Allowed: {shown}.".strip()

    return extra
