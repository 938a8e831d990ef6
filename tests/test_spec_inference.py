"""What a user's own table gets without declaring it: the key, group folds as scikit-learn makes
them, the group column never a feature, and a group column the splitter would ignore refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.model_selection import GroupKFold

from tasks.clean import clean_to_parquet, describe_spec, load_table
from tasks.config import CVConfig
from tasks.data.features import add_fold_fills
from tasks.data.read import read_table
from tasks.data.spec import DataSpec
from tasks.data.table import resolve_table
from tasks.errors import DataValidationError
from tasks.folds import group_values, plan_folds
from tasks.preprocess import fit_preprocessor


@pytest.fixture(scope="module")
def prefect_api():
    """Pure pandas and scikit-learn: no Prefect server needed (overrides the conftest fixture)."""
    yield


def table_csv(tmp_path, n: int = 60, **columns) -> str:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n), **columns})
    frame["y"] = rng.normal(size=n) * 10
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    return str(path)


def resolve(path: str, spec: DataSpec):
    warnings: list[str] = []
    frame = read_table(path, path, spec)
    resolved, table = resolve_table(frame, spec, path, warnings.append)
    return resolved, table, warnings


@pytest.mark.parametrize("name", ["id", "ID", "customer_id", "Patient_ID"])
def test_a_unique_id_named_column_is_the_key(tmp_path, name):
    ids = np.arange(1000, 1060)[::-1]
    resolved, table, warnings = resolve(table_csv(tmp_path, **{name: ids}), DataSpec(target="y"))
    assert resolved.key == name and resolved.id_column == name
    assert name not in resolved.features()
    assert table[name].tolist() == ids.tolist() and table[name].dtype == "int64"
    assert any(f"taking column {name!r} as the key" in w for w in warnings)


def test_an_id_named_column_that_repeats_is_not_the_key(tmp_path):
    path = table_csv(tmp_path, id=np.arange(60) % 30)
    resolved, _, warnings = resolve(path, DataSpec(target="y"))
    assert resolved.key == "row" and "id" in resolved.numeric
    assert not any("as the key" in w for w in warnings)


def test_two_id_columns_are_not_guessed_between(tmp_path):
    path = table_csv(tmp_path, id=np.arange(60), order_id=np.arange(60) + 7)
    resolved, _, warnings = resolve(path, DataSpec(target="y"))
    assert resolved.key == "row"
    assert any("['id', 'order_id'] all look like unique row ids" in w for w in warnings)
    assert any("--id-column id" in w for w in warnings)
    declared = resolve(path, DataSpec(target="y", id_column="order_id"))[0]
    assert declared.key == "order_id" and "id" in declared.numeric


def test_an_identifier_like_text_column_suggests_the_id_option(tmp_path):
    codes = [f"c{i:03d}" for i in range(60)]
    resolved, _, warnings = resolve(table_csv(tmp_path, code=codes), DataSpec(target="y"))
    assert "code" in resolved.dropped and resolved.key == "row"
    assert any("pass --id-column code" in w for w in warnings)


def test_the_preset_keeps_its_declared_id(bundled_csv):
    frame = read_table(str(bundled_csv), "jh", DataSpec())
    resolved, _ = resolve_table(frame, DataSpec(), "jh", lambda _: None)
    assert resolved.key == "id" and "id" not in resolved.features()


def test_the_group_column_is_never_a_feature(tmp_path):
    path = table_csv(tmp_path, patient=np.arange(60) % 12)
    resolved, table, _ = resolve(path, DataSpec(target="y", group_column="patient"))
    assert "patient" not in resolved.features() and resolved.group_column == "patient"
    assert "patient" in table.columns  # kept for the splitter
    with pytest.raises(DataValidationError, match="'patient' is declared both as group_column"):
        resolve(path, DataSpec(target="y", group_column="patient", numeric=["patient"]))


@pytest.mark.parametrize("splitter", ["kfold", "stratified", "repeated"])
def test_a_group_column_the_splitter_ignores_is_refused(splitter):
    with pytest.raises(ValidationError, match=f"group_column='patient'.*splitter='{splitter}'"):
        CVConfig(data=DataSpec(target="y", group_column="patient"), splitter=splitter)
    ok = CVConfig(data=DataSpec(target="y", group_column="patient"), splitter="group")
    assert ok.splitter == "group"


def test_integer_group_folds_equal_scikit_learns_on_the_column_as_read(tmp_path):
    # 23 integer groups: as text "10" sorts before "2", which would reorder the shuffle
    groups = np.repeat(np.arange(1, 24), np.arange(23) % 4 + 1)
    path = table_csv(tmp_path, n=len(groups), patient=groups)
    spec = DataSpec(target="y", group_column="patient")
    data = clean_to_parquet.fn(path, "ab" * 32, str(tmp_path / "cache"), spec)
    folds = plan_folds.fn(data, 5, True, 7, "group")
    read = pd.read_csv(path)["patient"]  # what a user would pass to scikit-learn
    expected = GroupKFold(5, shuffle=True, random_state=7).split(np.zeros(len(read)), groups=read)
    for fold, (_, test) in zip(folds, expected, strict=True):
        np.testing.assert_array_equal(fold.test_positions, test)
    as_text = GroupKFold(5, shuffle=True, random_state=7).split(read, groups=read.astype(str))
    assert any(
        not np.array_equal(f.test_positions, t) for f, (_, t) in zip(folds, as_text)
    ), "the text order must give other folds here, or this test proves nothing"
    assert load_table(data)["patient"].tolist() == [str(g) for g in groups]


def test_group_values_read_numbers_as_numbers_and_keep_text():
    assert group_values(pd.Series(["2", "10", "-3"], dtype="string")).tolist() == [2, 10, -3]
    assert group_values(pd.Series(["2.5", "10"], dtype="string")).dtype == np.float64
    assert group_values(pd.Series(["a", "10"], dtype="string")).tolist() == ["a", "10"]


def test_missing_cells_are_counted_and_said(tmp_path):
    x1 = np.arange(60, dtype=float)
    x1[[4, 9, 30]] = np.nan
    colour = np.array(["red", "blue", None] * 20, dtype=object)
    path = table_csv(tmp_path, x3=x1, colour=colour)
    resolved, _, _ = resolve(path, DataSpec(target="y"))
    assert resolved.missing_filled == {
        "x3": {"cells": 3, "with": "median", "value": None},  # fold scope: per fold
        "colour": {"cells": 20, "with": "level", "value": "missing"},
    }
    line = describe_spec(resolved)[-1]
    assert line == (
        "missing cells filled: 'x3' 3 with the median of each fold's training rows; "
        "'colour' 20 with the level 'missing'"
    )
    # global scope: the one median every row is filled with, as preprocessing computes it
    scoped, table, _ = resolve(path, DataSpec(target="y", preprocess_scope="global"))
    fill = fit_preprocessor(table, scoped, None)["numeric"]["x3"]["fill"]
    assert scoped.missing_filled["x3"]["value"] == fill == np.nanmedian(x1)
    assert f"'x3' 3 with the median of all rows, {fill:.10g}" in describe_spec(scoped)[-1]
    full = resolve(table_csv(tmp_path, x3=np.arange(60.0)), DataSpec(target="y"))[0]
    assert full.missing_filled == {} and not any("filled" in x for x in describe_spec(full))


def test_fold_fills_join_the_report_per_fold():
    report = {
        "a": {"cells": 2, "with": "median", "value": None},
        "g": {"cells": 1, "with": "median", "value": 4.5},
        "c": {"cells": 1, "with": "level", "value": "missing"},
    }
    fills = {"fold-1": {"a": 1.0, "g": 4.5}, "fold-2": {"a": 2.0, "g": 4.5}}
    out = add_fold_fills(report, fills)
    assert out["a"]["folds"] == {"fold-1": 1.0, "fold-2": 2.0}
    assert "folds" not in out["g"] and "folds" not in out["c"]
    assert "folds" not in report["a"]  # the resolved spec's report is not changed
