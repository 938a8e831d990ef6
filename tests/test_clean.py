"""The notebook's cleaning, checked value by value on a hand-written CSV, and its cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import zscore

from tasks.clean import CLEAN_VERSION, cache_path, clean_to_parquet, read_raw_csv, validate_raw
from tasks.errors import DataValidationError

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


def run_clean(tmp_path, path):
    return clean_to_parquet.fn(str(path), "ab" * 32, str(tmp_path / "cache"))


def test_clean_matches_the_notebook_exactly(tmp_path):
    data = run_clean(tmp_path, write_csv(tmp_path, [HEADER, *ROWS]))
    table = pd.read_parquet(data.path)
    assert list(table["id"]) == [1, 2, 3, 4, 5]
    # job is text even though "11" looks numeric; dummies sorted as pandas sorts strings
    assert [f for f in data.features if f.startswith("job_")] == ["job_11", "job_f8", "job_pz"]
    assert [f for f in data.features if f.startswith("area_")] == ["area_a", "area_b", "area_c"]
    assert table["job_11"].tolist() == [1, 0, 0, 0, 1]
    assert table["area_c"].tolist() == [0, 0, 0, 1, 0]
    # income: blank, NA and ? are missing -> median of (100, 300) = 200, then zscore ddof=0
    income = np.array([100.0, 200.0, 300.0, 200.0, 200.0])
    np.testing.assert_allclose(table["income"], (income - income.mean()) / income.std(ddof=0))
    np.testing.assert_allclose(table["age"], zscore([30, 40, 50, 35, 45]))
    # columns the notebook does not z-score stay raw
    np.testing.assert_allclose(table["dist_healthy"], [0.5, 0.6, 0.7, 0.8, 0.9])
    assert data.classes == ("a", "b", "c")
    assert len(data.features) == 10 + 3 + 3
    assert "id" not in data.features and "product" not in data.features


def test_cache_is_reused_and_keyed_by_content(tmp_path):
    path = write_csv(tmp_path, [HEADER, *ROWS])
    first = run_clean(tmp_path, path)
    assert not first.reused
    mtime = cache_path(str(tmp_path / "cache"), "ab" * 32).stat().st_mtime_ns
    second = run_clean(tmp_path, path)
    assert second.reused and second.path == first.path
    assert cache_path(str(tmp_path / "cache"), "ab" * 32).stat().st_mtime_ns == mtime
    assert first.path.endswith(f"{'ab' * 32}-{CLEAN_VERSION}.parquet")


def test_corrupted_cache_is_rebuilt(tmp_path):
    path = write_csv(tmp_path, [HEADER, *ROWS])
    first = run_clean(tmp_path, path)
    blob = open(first.path, "rb").read()
    open(first.path, "wb").write(blob[: len(blob) // 2])
    again = run_clean(tmp_path, path)
    assert not again.reused
    assert len(pd.read_parquet(again.path)) == 5


def test_bom_and_crlf_are_read_like_plain_csv(tmp_path):
    plain = read_raw_csv(str(write_csv(tmp_path, [HEADER, *ROWS])))
    odd = read_raw_csv(str(write_csv(tmp_path, [HEADER, *ROWS], "odd.csv", "\r\n", bom=True)))
    pd.testing.assert_frame_equal(plain, odd)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([HEADER.replace(",age", ",agee"), *ROWS], "missing required column(s) ['age']"),
        (
            [HEADER, ROWS[0].replace(",30,", ",thirty,")],
            "column 'age' row 1 (line 2) has non-numeric",
        ),
        ([HEADER, ROWS[0], ROWS[1].replace("2,pz", "1,pz")], "column 'id' value 1 is duplicated"),
        ([HEADER, ROWS[0], ROWS[2]], "has a single class ['b']"),
        ([HEADER], "header only"),
        ([HEADER, ROWS[0], ROWS[1].replace(",c", ",")], "column 'product' row 2 (line 3) is empty"),
        (
            [HEADER, ROWS[0], ROWS[1].replace(",20,", ",,")],
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
    frame = validate_raw(read_raw_csv(str(write_csv(tmp_path, lines))), "x.csv")
    assert "note" not in frame.columns


def test_bundled_data_cleans_to_the_notebooks_shape(tmp_path, bundled_csv):
    data = clean_to_parquet.fn(str(bundled_csv), "cd" * 32, str(tmp_path))
    assert data.n_rows == 2000
    assert len(data.features) == 47  # 10 numeric + 33 job + 4 area, as on the real data
    assert data.classes == tuple("abcdefg")
