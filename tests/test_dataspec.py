"""The general data step: reading, inference, validation and preprocessing on real small tables."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn import datasets

from tasks.data.read import read_table, sniff_delimiter
from tasks.data.resolve import resolve_spec
from tasks.data.spec import DataSpec, ResolvedSpec, preset_spec
from tasks.data.table import resolve_table, typed_table
from tasks.errors import DataValidationError
from tasks.preprocess import (
    decode_regression,
    encode_target,
    fit_preprocessor,
    transform,
    transform_float64,
    unseen_categories,
)


@pytest.fixture(scope="module")
def prefect_api():
    """These tests are pure pandas: no Prefect server needed (overrides the conftest fixture)."""
    yield


def load(path, spec: DataSpec, label: str | None = None):
    """Read, resolve and type a file as the data task will; returns (table, resolved, warnings)."""
    warnings: list[str] = []
    label = label or str(path)
    frame = read_table(str(path), label, spec)
    resolved = resolve_spec(frame, spec, label, warnings.append)
    return typed_table(frame, resolved, label), resolved, warnings


def write(tmp_path, text: str, name: str = "t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def sk_frame(loader, **kw) -> pd.DataFrame:
    return loader(as_frame=True, **kw).frame


# ----------------------------------------------------------------------------- the spec


def test_no_target_means_the_preset_and_the_preset_fixes_the_schema():
    spec = DataSpec()
    assert spec.active_preset == "jh-simple" and spec.resolved_scope() == "global"
    assert DataSpec(preprocess_scope="fold").resolved_scope() == "fold"
    assert DataSpec(target="y").active_preset is None
    assert DataSpec(target="y").resolved_scope() == "fold"
    with pytest.raises(ValidationError, match="fixes the schema"):
        DataSpec(preset="jh-simple", target="product")
    with pytest.raises(ValidationError, match="fixes the schema"):
        DataSpec(numeric=["income"])
    with pytest.raises(ValidationError):
        DataSpec(target="y", colour="red")
    with pytest.raises(ValidationError):
        DataSpec(target="y", max_categories=1)
    assert all(f.description for f in DataSpec.model_fields.values())


def test_preset_expands_to_the_notebooks_schema():
    spec = preset_spec("jh-simple")
    assert spec.target == "product" and spec.id_column == "id"
    assert spec.categorical == ["job", "area"] and len(spec.numeric) == 10
    assert spec.zscore == ["income", "aspect", "save_rate", "age", "subscriptions"]
    assert spec.missing == {"income": "median"} and spec.numeric_missing == "error"


# ----------------------------------------------------------------------------- exactness


def test_jh_simple_preset_is_bit_identical_to_todays_cleaning(bundled_csv):
    from benchmarks.notebook_cleaning import notebook_clean

    old, old_features = notebook_clean(str(bundled_csv))
    old_classes = sorted(old["product"].unique())
    table, resolved, _ = load(bundled_csv, DataSpec())
    params = fit_preprocessor(table, resolved, None)
    assert resolved.features() == old_features
    assert len(old_features) == 47
    assert resolved.classes == old_classes == list("abcdefg")
    assert table["id"].dtype == np.int64
    np.testing.assert_array_equal(table["id"].to_numpy(), old["id"].to_numpy())
    expected = old[old_features].to_numpy(dtype="float64")
    assert np.array_equal(transform_float64(table, resolved, params), expected)
    assert np.array_equal(transform(table, resolved, params), expected.astype("float32"))
    y = encode_target(table, resolved, params)
    assert y.shape == (2000, 7) and y.dtype == np.float32
    assert (np.array(resolved.classes)[y.argmax(1)] == old["product"].to_numpy()).all()


def test_preset_with_blank_income_and_extra_column(tmp_path):
    from benchmarks.notebook_cleaning import notebook_clean

    header = (
        "id,job,area,income,aspect,subscriptions,dist_healthy,save_rate,dist_unhealthy,age,"
        "pop_dense,retail_dense,crime,product,note"
    )
    rows = [
        "1,11,a,100.0,1.0,0,0.5,10,0.1,30,0.2,0.3,0.4,b,x",
        "2,pz,b,,2.0,1,0.6,20,0.2,40,0.3,0.4,0.5,c,y",
        "3,f8,a,300.0,3.0,2,0.7,30,0.3,50,0.4,0.5,0.6,b,z",
        "4,pz,c,NA,4.0,3,0.8,40,0.4,35,0.5,0.6,0.7,a,w",
        "5,11,a,?,5.0,4,0.9,50,0.5,45,0.6,0.7,0.8,c,v",
    ]
    path = write(tmp_path, "\n".join([header, *rows]) + "\n")
    old, features = notebook_clean(str(path))
    features = [f for f in features if f != "note"]  # the notebook's file has no extra column
    table, resolved, warnings = load(path, DataSpec())
    assert any("ignoring unknown column(s) ['note']" in w for w in warnings)
    assert resolved.dropped["note"].startswith("not in the jh-simple schema")
    params = fit_preprocessor(table, resolved, None)
    assert params["numeric"]["income"]["fill"] == 200.0
    assert np.array_equal(transform_float64(table, resolved, params), old[features].to_numpy())


def test_one_pass_gives_the_two_step_spec_and_table(tmp_path, bundled_csv):
    """resolve_table reuses the numbers resolving parsed: the same spec and table, to the bit."""
    text = "id,x,c,y,r\n3,1.5,a, 1\n1,,b,2,0.25\n2,2.5,,,1e3\n4,-1,a,1,7\n5,0.1,b,2,1\n"
    for path, spec in [
        (bundled_csv, DataSpec()),
        (write(tmp_path, text), DataSpec(target="y", id_column="id")),
        (write(tmp_path, text), DataSpec(target="r", task="regression")),
    ]:
        table, resolved, warnings = load(path, spec)
        heard: list[str] = []
        frame = read_table(str(path), str(path), spec)
        one_resolved, one_table = resolve_table(frame, spec, str(path), heard.append)
        assert one_resolved == resolved and heard == warnings
        pd.testing.assert_frame_equal(one_table, table, check_exact=True)


# ----------------------------------------------------------------------------- inference


def test_iris_is_inferred_classification_with_numeric_class_order(tmp_path):
    path = tmp_path / "iris.csv"
    sk_frame(datasets.load_iris).to_csv(path, index=False)
    table, resolved, _ = load(path, DataSpec(target="target"))
    assert resolved.task == "classification"
    assert resolved.task_reason == "inferred: integer target with 3 distinct values (<= 20)"
    assert resolved.classes == ["0", "1", "2"] and resolved.key == "row"
    assert resolved.numeric == list(sk_frame(datasets.load_iris).columns[:4])
    assert table["row"].tolist() == list(range(150))
    y = encode_target(table, resolved, fit_preprocessor(table, resolved, None))
    assert y.shape == (150, 3) and y.sum() == 150


def test_text_target_and_categorical_feature_order(tmp_path):
    frame = sk_frame(datasets.load_wine)
    frame["species"] = np.array(["x", "y", "z"])[frame.pop("target")]
    frame.insert(0, "colour", np.where(frame["alcohol"] > 13, "red", "white"))
    frame["soil"] = np.tile(["clay", "sand", "loam"], len(frame))[: len(frame)]
    path = tmp_path / "wine.csv"
    frame.to_csv(path, index=False)
    table, resolved, _ = load(path, DataSpec(target="species"))
    assert resolved.task_reason == "inferred: target 'species' is text"
    assert resolved.categorical == ["colour", "soil"]
    numeric = [c for c in frame.columns if c not in ("colour", "soil", "species")]
    assert resolved.features() == [
        *numeric, "colour_red", "colour_white", "soil_clay", "soil_loam", "soil_sand",
    ]  # fmt: skip
    x = transform(table, resolved, fit_preprocessor(table, resolved, None))
    assert x.shape == (178, len(numeric) + 5) and x.dtype == np.float32
    assert np.allclose(x[:, len(numeric) :].sum(1), 2.0)
    # z-scored numbers: mean 0, std 1 over the fitted rows
    assert np.allclose(x[:, : len(numeric)].mean(0), 0, atol=1e-5)


def test_numbers_classified_numerically_not_as_text(tmp_path):
    lines = ["x,y"] + [f"{i},{c}" for i, c in enumerate([10, 2, 10, 2, 1, 1] * 3)]
    _, resolved, _ = load(write(tmp_path, "\n".join(lines)), DataSpec(target="y"))
    assert resolved.task == "classification" and resolved.classes == ["1", "2", "10"]


def test_diabetes_is_inferred_regression_and_decodes_back(tmp_path):
    path = tmp_path / "diabetes.csv"
    sk_frame(datasets.load_diabetes, scaled=False).to_csv(path, index=False)
    table, resolved, _ = load(path, DataSpec(target="target", loss="huber"))
    assert (resolved.task, resolved.task_reason) == ("regression", "inferred: numeric target")
    assert resolved.classes == [] and resolved.loss == "huber" and len(resolved.numeric) == 10
    params = fit_preprocessor(table, resolved, None)
    y = encode_target(table, resolved, params)
    assert y.dtype == np.float32 and abs(float(y.mean())) < 1e-5
    np.testing.assert_allclose(decode_regression(y, params), table["target"], rtol=1e-5)


def test_breast_cancer_binary_with_declared_regression(tmp_path):
    path = tmp_path / "bc.csv"
    sk_frame(datasets.load_breast_cancer).to_csv(path, index=False)
    _, resolved, _ = load(path, DataSpec(target="target"))
    assert resolved.classes == ["0", "1"]
    _, resolved, _ = load(path, DataSpec(target="target", task="regression"))
    assert (resolved.task, resolved.task_reason) == ("regression", "declared")


def test_identifier_like_text_and_constant_columns_are_dropped(tmp_path):
    n = 300
    frame = pd.DataFrame(
        {
            "name": [f"person-{i}" for i in range(n)],
            "flat": [3.0] * n,
            "x": np.arange(n) % 7,
            "y": ["a", "b"] * (n // 2),
        }
    )
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    _, resolved, warnings = load(path, DataSpec(target="y"))
    assert "name" in resolved.dropped and "flat" in resolved.dropped
    assert resolved.features() == ["x"]
    assert any("'name'" in w for w in warnings) and any("'flat'" in w for w in warnings)


def test_free_text_is_dropped_even_with_fewer_levels_than_max_categories(tmp_path):
    n = 150  # iris-sized: 150 distinct notes are below max_categories (200), still not a feature
    frame = pd.DataFrame(
        {
            "note": [f"free text {i}" for i in range(n)],
            "code": [f"c{i % 25}" for i in range(n)],  # 25 levels in 150 rows: a real category
            "ten": [f"t{i}" for i in range(10)] * (n // 10),
            "y": ["a", "b", "c"] * (n // 3),
        }
    )
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    _, resolved, warnings = load(path, DataSpec(target="y"))
    assert "note" in resolved.dropped and "150 distinct" in resolved.dropped["note"]
    assert set(resolved.categorical) == {"code", "ten"}
    assert any("'note'" in w and "free text" in w for w in warnings), warnings
    _, declared, _ = load(path, DataSpec(target="y", categorical=["note"]))
    assert "note" in declared.categorical  # declared: the user's word wins


# ----------------------------------------------------------------------------- fold scope


def test_fold_scope_fits_on_training_rows_only(tmp_path):
    n = 40
    frame = pd.DataFrame({"x": np.arange(n, dtype=float), "y": ["a", "b"] * (n // 2)})
    frame.loc[30:, "x"] = 1e6  # the test rows are extreme
    frame.loc[[3, 35], "x"] = np.nan
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    train, test = np.arange(30), np.arange(30, n)
    table, resolved, _ = load(path, DataSpec(target="y"))
    assert resolved.scope == "fold"
    fold = fit_preprocessor(table, resolved, train)
    whole = fit_preprocessor(table, resolved, None)
    train_only = fit_preprocessor(table.iloc[train].reset_index(drop=True), resolved, None)
    assert fold == train_only
    x_fold, x_whole = transform(table, resolved, fold), transform(table, resolved, whole)
    np.testing.assert_array_equal(x_fold[train], transform(table.iloc[train], resolved, train_only))
    assert not np.allclose(x_fold[train], x_whole[train])
    assert abs(float(x_fold[train, 0].mean())) < 1e-5
    assert fold["numeric"]["x"]["fill"] == float(np.nanmedian(frame["x"][:30]))
    assert np.isfinite(x_fold[test]).all()


def test_constant_on_fitted_rows_scales_by_one_and_unseen_categories_are_zeros(tmp_path):
    frame = pd.DataFrame(
        {"x": [1.0] * 6 + [5.0, 7.0], "c": list("pppqqqrs"), "y": list("abababab")}
    )
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    table, resolved, _ = load(path, DataSpec(target="y"))
    params = fit_preprocessor(table, resolved, np.arange(6))
    assert params["numeric"]["x"]["scale"] == 1.0
    x = transform(table, resolved, params)
    assert np.isfinite(x).all() and x[6, 0] == 4.0
    new = table.copy()
    new.loc[0, "c"] = "never-seen"
    assert unseen_categories(new, resolved, params) == {"c": 1}
    assert transform(new, resolved, params)[0, 1:].sum() == 0.0


# ----------------------------------------------------------------------------- reading


def test_big_ids_survive_exactly(tmp_path):
    spec = DataSpec(target="y", id_column="id")
    big = ["9007199254740993", "18446744073709551616", "-3"]  # beyond float and int64
    lines = ["id,x,y", *(f"{i},{k},{'ab'[k % 2]}" for k, i in enumerate([*big, "4", "5"]))]
    table, resolved, _ = load(write(tmp_path, "\n".join(lines)), spec)
    assert resolved.id_dtype == "string"
    assert table["id"].tolist() == [*big, "4", "5"]
    lines = ["id,x,y", "9007199254740993,1,a", "9223372036854775807,2,b", "1,3,a", "2,4,b"]
    table, resolved, _ = load(write(tmp_path, "\n".join(lines)), spec)
    assert resolved.id_dtype == "int64" and table["id"].dtype == np.int64
    assert table["id"].tolist()[:2] == [9007199254740993, 9223372036854775807]


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_delimiter_is_sniffed(tmp_path, sep):
    frame = sk_frame(datasets.load_iris).iloc[::5]
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False, sep=sep)
    table, resolved, _ = load(path, DataSpec(target="target"))
    assert len(resolved.numeric) == 4 and len(table) == 30
    assert sniff_delimiter("a;b;c\n1,5;2;3\n") == ";"


def test_gzip_is_detected_by_content_under_a_csv_name(tmp_path):
    path = tmp_path / "download.csv"
    with gzip.open(path, "wt") as handle:
        sk_frame(datasets.load_iris).to_csv(handle, index=False, sep=";")
    table, resolved, _ = load(path, DataSpec(target="target"))
    assert len(table) == 150 and len(resolved.features()) == 4


def test_invalid_utf8_in_gzip_names_the_byte_and_compression(tmp_path):
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(b"x,y\n1,a\n2,\xff\n3,b\n"))
    with pytest.raises(DataValidationError, match=r"byte 10 of the gzip-compressed .*line 3"):
        read_table(str(path), "t.csv.gz", DataSpec(target="y"))
    plain = write(tmp_path, "")
    plain.write_bytes(b"x,y\n1,a\n2,\xff\n")
    with pytest.raises(DataValidationError, match=r"t.csv: not valid UTF-8 at byte 10 \(line 3"):
        read_table(str(plain), "t.csv", DataSpec(target="y"))


def test_parquet_input_is_read_exactly(tmp_path):
    frame = pd.DataFrame(
        {
            "id": np.array([2**62 + 1, 5, 7, 9], dtype="int64"),
            "x": [0.1, np.nan, 1e-300, 2.5],
            "c": pd.Series(["u", None, "v", "u"], dtype="string"),
            "y": ["a", "b", "a", "b"],
        }
    )
    path = tmp_path / "data.bin"  # content, not name, says Parquet
    frame.to_parquet(path)
    table, resolved, _ = load(path, DataSpec(target="y", id_column="id"))
    assert table["id"].tolist() == frame["id"].tolist()
    np.testing.assert_array_equal(table["x"].to_numpy(), frame["x"].to_numpy())
    assert resolved.vocabularies["c"] == ["missing", "u", "v"]


def test_missing_targets_are_left_out_and_counted(tmp_path):
    lines = ["x,y", "1,a", "2,", "3,b", "4,NA", "5,a", "6,b"]
    table, resolved, warnings = load(write(tmp_path, "\n".join(lines)), DataSpec(target="y"))
    assert resolved.excluded_target_rows == 2 and resolved.n_rows == 4
    assert table["row"].tolist() == [0, 2, 4, 5]
    assert any("row 2 (line 3), row 4 (line 5)" in w for w in warnings)


def test_whitespace_is_stripped_with_a_count(tmp_path):
    lines = ["x,c,y", "1, p ,a ", "2,p,b", "3,q , a", "4,q,b"]
    table, resolved, warnings = load(write(tmp_path, "\n".join(lines)), DataSpec(target="y"))
    assert resolved.classes == ["a", "b"] and resolved.vocabularies["c"] == ["p", "q"]
    assert any("stripped surrounding whitespace from 4 cell(s)" in w for w in warnings)


def test_classes_differing_by_case_are_warned_about(tmp_path):
    lines = ["x,y", "1,Cat", "2,cat", "3,dog", "4,Cat"]
    _, resolved, warnings = load(write(tmp_path, "\n".join(lines)), DataSpec(target="y"))
    assert resolved.classes == ["Cat", "cat", "dog"]
    assert any("differ only by case" in w for w in warnings)


def test_resolved_spec_round_trips_through_json(tmp_path):
    path = tmp_path / "iris.csv"
    sk_frame(datasets.load_iris).to_csv(path, index=False)
    _, resolved, _ = load(path, DataSpec(target="target", group_column=None))
    again = ResolvedSpec.from_dict(json.loads(json.dumps(resolved.to_dict())))
    assert again == resolved and again.features() == resolved.features()


# ----------------------------------------------------------------------------- refusals

GOOD = ["id,x,c,y", "1,1.5,p,a", "2,2.5,q,b", "3,3.5,p,a", "4,4.5,q,b"]


def _replace(row: int, column: int, value: str) -> list[str]:
    lines = list(GOOD)
    cells = lines[row].split(",")
    cells[column] = value
    lines[row] = ",".join(cells)
    return lines


@pytest.mark.parametrize(
    ("lines", "spec", "expected"),
    [
        (GOOD, dict(target="label"), "target column 'label' not found; found columns ['id'"),
        (GOOD, dict(target="y", numeric=["z"]), "'z' (numeric) not found; found columns"),
        (GOOD, dict(target="y", missing={"q": "error"}), "'q' (missing) not found"),
        (GOOD, dict(target="y", group_column="g"), "'g' (group_column) not found"),
        (["id,x,y", "1,1,a", "2,2,a"], dict(target="y"), "column 'y' has a single class ['a']"),
        (
            ["x,y", "1,1.5", "2,2.5", "3,zz", "4,3"],
            dict(target="y", task="regression"),
            "target column 'y' row 3 (line 4) is 'zz'; regression needs a number",
        ),
        (
            _replace(3, 0, "1"),
            dict(target="y", id_column="id"),
            "'id' value '1' is duplicated (row 1 (line 2), row 3 (line 4))",
        ),
        (
            ["x,e,y", "1,,a", "2,,b", "3,,a"],
            dict(target="y"),
            "column 'e' is empty in every row",
        ),
        (_replace(2, 1, "inf"), dict(target="y"), "column 'x' has non-finite numbers"),
        (_replace(4, 1, "1e400"), dict(target="y"), "at row 4 (line 5)"),
        (
            ["x,y", "1,1.5", "2,-inf", "3,2.5", "4,7.25"],
            dict(target="y"),
            "column 'y' has non-finite numbers (inf, -inf or beyond float range) at row 2",
        ),
        (
            _replace(2, 1, "abc"),
            dict(target="y", numeric=["x"]),
            "column 'x' row 2 (line 3) has non-numeric value 'abc'",
        ),
        (
            _replace(2, 1, ""),
            dict(target="y", numeric_missing="error"),
            "column 'x' row 2 (line 3) is empty; its missing-value policy is 'error'",
        ),
        (
            _replace(4, 2, ""),
            dict(target="y", missing={"c": "error"}),
            "column 'c' row 4 (line 5) is empty",
        ),
        (
            _replace(3, 2, "w" * 50),
            dict(target="y", max_cell_chars=20),
            "column 'c' row 3 (line 4) has a cell of 50 characters (starting 'wwwwwwwwwwwwwwwwwwww",
        ),
        (
            ["x,c,c_p,y", "1,p,0,a", "2,q,1,b", "3,p,0,a"],
            dict(target="y"),
            "one-hot column 'c_p' for column 'c' value 'p' collides with column 'c_p'",
        ),
        (
            ["x,g,y", "1,u,a", "2,,b", "3,v,a"],
            dict(target="y", group_column="g"),
            "group column 'g' row 2 (line 3) is empty",
        ),
        (
            [*GOOD, "5,1.5,r,a", "6,1.5,s,b", "7,1.5,p,a"],
            dict(target="y", categorical=["c"], max_categories=3),
            "column 'c' has 4 distinct values, more than max_categories=3; use --drop c",
        ),
        (["x,y"], dict(target="y"), "header only, no data rows"),
        ([], dict(target="y"), "the file is empty"),
        (
            ["x,y", '1,"a', "2,b"],
            dict(target="y", delimiter=","),
            "malformed CSV",
        ),
        (GOOD, dict(target="y", numeric=["c"], categorical=["c"]), "declared both as"),
    ],
)
def test_refusals_name_the_file_column_and_row(tmp_path, lines, spec, expected):
    path = write(tmp_path, "\n".join(lines) + ("\n" if lines else ""))
    with pytest.raises(DataValidationError) as err:
        load(path, DataSpec(**spec), label="my-data.csv")
    assert expected in str(err.value)
    assert str(err.value).startswith("my-data.csv: ")


def test_duplicate_header_names_are_refused(tmp_path):
    with pytest.raises(DataValidationError, match="'x' appears twice"):
        load(write(tmp_path, "x,x,y\n1,2,a\n3,4,b\n"), DataSpec(target="y"))


def test_high_cardinality_text_suggests_drop_or_numeric(tmp_path):
    n = 300
    frame = pd.DataFrame({"t": [f"v{i % 250}" for i in range(n)], "y": ["a", "b"] * (n // 2)})
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataValidationError, match="use --drop t or, if it holds numbers"):
        load(path, DataSpec(target="y"))
    _, resolved, _ = load(path, DataSpec(target="y", drop=["t"]))
    assert resolved.dropped == {"t": "declared in drop"}


def test_header_names_are_exact_and_stripped(tmp_path):
    path = write(tmp_path, "NA, y ,x\np,a,1\nq,b,2\np,a,3\n")
    _, resolved, warnings = load(path, DataSpec(target="y"))
    assert resolved.categorical == ["NA"] and resolved.target == "y"
    assert any("column name(s) [' y ']" in w for w in warnings)
    with pytest.raises(DataValidationError, match="column 2 of the header has no name"):
        load(write(tmp_path, "x,,y\n1,2,a\n"), DataSpec(target="y"))


def test_zip_is_detected_by_content(tmp_path):
    import zipfile

    path = tmp_path / "download"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("iris.csv", sk_frame(datasets.load_iris).to_csv(index=False, sep="\t"))
    table, resolved, _ = load(path, DataSpec(target="target"))
    assert len(table) == 150 and len(resolved.numeric) == 4


def test_preset_keeps_its_declared_feature_order_whatever_the_file_order(tmp_path, bundled_csv):
    frame = pd.read_csv(bundled_csv, dtype=str, keep_default_na=False)
    swapped = frame[["area", "crime", *[c for c in frame.columns if c not in ("area", "crime")]]]
    swapped.to_csv(tmp_path / "swapped.csv", index=False)
    _, expected, _ = load(bundled_csv, DataSpec())
    _, resolved, _ = load(tmp_path / "swapped.csv", DataSpec())
    assert resolved.features() == expected.features()


def test_policies_apply_to_features_only(tmp_path):
    with pytest.raises(DataValidationError, match=r"policy given for \['y'\]"):
        load(write(tmp_path, "\n".join(GOOD)), DataSpec(target="y", missing={"y": "error"}))
    with pytest.raises(DataValidationError, match="'c' is categorical; missing-value policy"):
        load(write(tmp_path, "\n".join(GOOD)), DataSpec(target="y", missing={"c": "median"}))
