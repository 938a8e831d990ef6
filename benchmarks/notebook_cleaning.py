"""The T81-558 5.3 notebook's cleaning cells: the reference the jh-simple preset must match."""

from __future__ import annotations

import pandas as pd
from scipy.stats import zscore


def notebook_clean(path: str) -> tuple[pd.DataFrame, list[str]]:
    """Read and clean a jh-simple CSV exactly as the notebook does; (table, x columns)."""
    df = pd.read_csv(path, na_values=["NA", "?"], dtype={"job": str, "area": str})
    df = pd.concat([df, pd.get_dummies(df["job"], prefix="job", dtype="float64")], axis=1)
    df = df.drop("job", axis=1)
    df = pd.concat([df, pd.get_dummies(df["area"], prefix="area", dtype="float64")], axis=1)
    df = df.drop("area", axis=1)
    med = df["income"].median()
    df["income"] = df["income"].fillna(med)
    for column in ("income", "aspect", "save_rate", "age", "subscriptions"):
        df[column] = zscore(df[column].to_numpy(dtype="float64"))
    x_columns = list(df.columns.drop("product").drop("id"))
    return df, x_columns
