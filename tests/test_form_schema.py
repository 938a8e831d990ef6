"""The UI's custom-run form: ranges from the fields' own constraints, usual fields first."""

from __future__ import annotations

from tasks.form import allowed_range


def _schema() -> dict:
    from prefect.utilities.callables import parameter_schema

    from flows.cross_validate import cross_validate

    return parameter_schema(cross_validate.fn).model_dump()["definitions"]


def test_each_constrained_field_says_its_range_taken_from_the_constraint():
    from tasks.config import CVConfig, ModelConfig

    defs = _schema()
    epochs = ModelConfig.model_fields["epochs"].metadata  # Ge(1), Le(100000): the definition
    low, high = (next(getattr(m, a) for m in epochs if hasattr(m, a)) for a in ("ge", "le"))
    assert defs["ModelConfig"]["properties"]["epochs"]["description"].endswith(
        f"Allowed: {low}–{high}."
    )
    assert defs["ModelConfig"]["properties"]["dropout"]["description"].endswith(
        "Allowed: 0 ≤ x < 1."
    )
    folds = defs["CVConfig"]["properties"]["folds"]
    assert folds["description"].endswith(f"Allowed: {folds['minimum']}–{folds['maximum']}.")
    assert "Allowed: ≥ 1." in defs["CVConfig"]["properties"]["min_folds"]["description"]
    assert "Allowed" not in defs["CVConfig"]["properties"]["shuffle"]["description"]
    assert CVConfig.model_fields["folds"].description == "Number of folds (k)."  # CLI unchanged


def test_the_fields_people_change_come_first():
    defs = _schema()

    def order(name: str) -> list[str]:
        props = defs[name]["properties"]
        return sorted(props, key=lambda k: props[k].get("position", float("inf")))

    assert order("CVConfig")[:4] == ["source", "data", "model", "folds"]
    assert order("DataSpec")[:2] == ["target", "task"]
    assert order("ModelConfig")[0] == "epochs"


def test_allowed_range_reads_every_kind_of_bound():
    assert allowed_range({"minimum": 1, "maximum": 100000}) == "1–100000"
    assert allowed_range({"exclusiveMinimum": 0}) == "> 0"
    assert allowed_range({"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "null"}]})\
        == "> 0"
    assert allowed_range({"maximum": 2.5}) == "≤ 2.5"
    assert allowed_range({"type": "string"}) == ""
