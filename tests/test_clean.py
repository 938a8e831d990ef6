"""The clean step on a hand-written jh-simple CSV: the notebook's features, and the cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import zscore

from tasks.clean import CLEAN_VERSION, cache_path, clean_to_parquet, load_table
from tasks.data.read import read_table
from tasks.data.spec import DataSpec
from tasks.errors import DataValidationError
from tasks.fit import prepare_fold

PRESET = DataSpec()

HEADER = (
    "id,job,area,income,aspect,subscriptions,dist_healthy,save_rate,dist_unhealthy,age,"
    "pop_dense,retail_dense,crime,product"
)
ROWS = [
    "1,11,a,100.0,1.0,0,0.5,10,0.1,30,0.2,0.3,0.4,b",
    "2,pz,b,,2.0,1,0.6,20,0.2,40,0.3,0.4,0.5,c",
    "3,f8,a,300.0,3.0,2,0.7,30,0.3,50,0.4,0.5,0.6,b",
    "4,pz,c,NA,4.0,3,0.8,40,0.4,35,0.5,0.6,0.7,a",
    "5,11,a,?,5.0,4,0.9,50,0.5,45,0.6,0.7,0.8,c",
]


def write_csv(tmp_path, lines, name="raw.csv", newline="\n", bom=False):
    path = tmp_path / name
    text = newline.join(lines) + newline
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


def run_clean(tmp_path, path, spec=PRESET):
    return clean_to_parquet.fn(str(path), "ab" * 32, str(tmp_path / "cache"), spec)


def features_of(data) -> pd.DataFrame:
    """The model's input matrix as the fold tasks build it (global scope for the preset)."""
    x, _, _ = prepare_fold(load_table(data), data.spec, np.arange(data.n_rows))
    return pd.DataFrame(x.astype("float64"), columns=list(data.features))


def test_clean_matches_the_notebook_exactly(tmp_path):
    data = run_clean(tmp_path, write_csv(tmp_path, [HEADER, *ROWS]))
    assert list(load_table(data)["id"]) == [1, 2, 3, 4, 5]
    table = features_of(data)
    # job is text even though "11" looks numeric; dummies sorted as pandas sorts strings
    assert [f for f in data.features if f.startswith("job_")] == ["job_11", "job_f8", "job_pz"]
    assert [f for f in data.features if f.startswith("area_")] == ["area_a", "area_b", "area_c"]
    assert table["job_11"].tolist() == [1, 0, 0, 0, 1]
    assert table["area_c"].tolist() == [0, 0, 0, 1, 0]
    # income: blank, NA and ? are missing -> median of (100, 300) = 200, then zscore ddof=0
    income = np.array([100.0, 200.0, 300.0, 200.0, 200.0])
    np.testing.assert_allclose(
        table["income"], (income - income.mean()) / income.std(ddof=0), rtol=1e-6
    )
    np.testing.assert_allclose(table["age"], zscore([30, 40, 50, 35, 45]), rtol=1e-6)
    # columns the notebook does not z-score stay raw
    np.testing.assert_allclose(table["dist_healthy"], [0.5, 0.6, 0.7, 0.8, 0.9], rtol=1e-6)
    assert data.classes == ("a", "b", "c")
    assert len(data.features) == 10 + 3 + 3
    assert "id" not in data.features and "product" not in data.features


def test_cache_is_reused_and_keyed_by_content_and_spec(tmp_path, caplog):
    path = write_csv(tmp_path, [HEADER, *ROWS])
    first = run_clean(tmp_path, path)
    cached = cache_path(str(tmp_path / "cache"), "ab" * 32, PRESET)
    mtime = cached.stat().st_mtime_ns
    with caplog.at_level("INFO"):
        second = run_clean(tmp_path, path)
    assert "Reusing cleaned data" in caplog.text
    assert second == first
    assert cached.stat().st_mtime_ns == mtime
    assert first.path == str(cached) and first.path.endswith(f"-{CLEAN_VERSION}.parquet")
    # another spec of the same content is another cleaned table
    other = run_clean(tmp_path, path, DataSpec(target="product", id_column="id"))
    assert other.path != first.path and other.data_key != first.data_key


def test_corrupted_cache_is_rebuilt(tmp_path):
    path = write_csv(tmp_path, [HEADER, *ROWS])
    first = run_clean(tmp_path, path)
    blob = open(first.path, "rb").read()
    open(first.path, "wb").write(blob[: len(blob) // 2])
    again = run_clean(tmp_path, path)
    assert len(pd.read_parquet(again.path)) == 5


def test_bom_and_crlf_are_read_like_plain_csv(tmp_path):
    plain = read_table(str(write_csv(tmp_path, [HEADER, *ROWS])), "plain.csv", PRESET)
    odd_path = write_csv(tmp_path, [HEADER, *ROWS], "odd.csv", "\r\n", bom=True)
    odd = read_table(str(odd_path), "odd.csv", PRESET)
    pd.testing.assert_frame_equal(plain, odd)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([HEADER.replace(",age", ",agee"), *ROWS], "'age'"),
        (
            [HEADER, ROWS[0].replace(",30,", ",thirty,"), ROWS[1]],
            "column 'age' row 1 (line 2) has non-numeric",
        ),
        ([HEADER, ROWS[0], ROWS[1].replace("2,pz", "1,pz")], "value '1' is duplicated"),
        ([HEADER, ROWS[0], ROWS[2]], "has a single class ['b']"),
        ([HEADER], "header only"),
        (
            [HEADER, ROWS[0], ROWS[1].replace(",20,", ",,"), ROWS[2]],
            "column 'save_rate' row 2 (line 3) is empty",
        ),
    ],
)
def test_bad_schemas_name_the_column_and_row(tmp_path, lines, expected):
    path = write_csv(tmp_path, lines)
    with pytest.raises(DataValidationError) as err:
        run_clean(tmp_path, path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)
    assert not list((tmp_path / "cache").rglob("*.parquet"))


def test_extra_columns_are_ignored(tmp_path):
    lines = [HEADER + ",note", *(r + ",hello" for r in ROWS)]
    data = run_clean(tmp_path, write_csv(tmp_path, lines))
    assert "note" not in load_table(data).columns and "note" not in data.features
    assert "note" in data.spec.dropped


def test_a_row_without_a_label_is_left_out_and_counted(tmp_path):
    lines = [HEADER, ROWS[0], ROWS[1].replace(",c", ","), ROWS[3]]
    data = run_clean(tmp_path, write_csv(tmp_path, lines))
    assert data.n_rows == 2 and data.spec.excluded_target_rows == 1
    assert load_table(data)["id"].tolist() == [1, 4]


def test_bundled_data_cleans_to_the_notebooks_shape(tmp_path, bundled_csv):
    data = clean_to_parquet.fn(str(bundled_csv), "cd" * 32, str(tmp_path), PRESET)
    assert data.n_rows == 2000
    assert len(data.features) == 47  # 10 numeric + 33 job + 4 area, as on the real data
    assert data.classes == tuple("abcdefg")
