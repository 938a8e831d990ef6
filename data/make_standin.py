"""Generate ``jh-simple-standin.csv``, a synthetic stand-in for ``jh-simple-dataset.csv``.

The real data set cannot be downloaded here (no internet access), so this script
builds a deterministic substitute that mirrors its published schema: 2,000 rows
(``--rows N`` for other sizes, every count below scaled in proportion), 14 columns in the
same order, the same categorical levels and skew (33 two-character
job codes, some numeric-looking; four areas; seven product classes), 59 missing
income cells written with mixed markers (blank, ``NA``, ``?``), and realistic ranges.
The target ``product`` depends non-linearly on the features plus noise, so a small
MLP learns it clearly better than the majority class (roughly the real data's level).

Usage: ``python data/make_standin.py [--out data/jh-simple-standin.csv] [--seed 5583]
[--rows 2000]``. The default output is the bundled file, byte for byte; any (seed, rows) always
gives the same file.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

N_ROWS = 2000  # the bundled file's size; the counts below add up to it
MIN_ROWS = 100  # enough rows for every job code, area, class and missing marker to appear
DEFAULT_OUT = Path(__file__).with_name("jh-simple-standin.csv")
JOB_CODES = [
    "pz", "pe", "qp", "11", "kx", "f8", "e2", "mr", "10", "ta", "wb",
    "hc", "07", "zn", "ug", "sd", "42", "lo", "vy", "bj", "c3", "ri",
    "nm", "ak", "9f", "xe", "dq", "gt", "yh", "36", "ow", "jv", "5s",
]  # fmt: skip
JOB_COUNTS = [
    411, 208, 189, 163, 142, 122, 100, 90, 80, 70, 62, 55, 48, 42, 36, 31, 26,
    22, 19, 16, 14, 12, 10, 8, 6, 5, 4, 3, 2, 1, 1, 1, 1,
]  # fmt: skip
AREA_COUNTS = {"a": 902, "b": 111, "c": 831, "d": 156}
PRODUCT_COUNTS = {"a": 130, "b": 963, "c": 738, "d": 59, "e": 30, "f": 72, "g": 8}
MISSING_MARKERS = [""] * 39 + ["NA"] * 10 + ["?"] * 10
COLUMNS = [
    "id", "job", "area", "income", "aspect", "subscriptions", "dist_healthy",
    "save_rate", "dist_unhealthy", "age", "pop_dense", "retail_dense", "crime", "product",
]  # fmt: skip


def scaled_counts(counts: list[int], n_rows: int) -> list[int]:
    """Counts in the same proportions adding up to `n_rows`, each level kept (at least 1).

    Largest-remainder rounding, ties to the earlier level; at the bundled size the counts come
    back unchanged, so the default file stays byte-identical.
    """
    total = sum(counts)
    if n_rows == total:
        return list(counts)
    exact = [c * n_rows / total for c in counts]
    scaled = [max(1, int(e)) for e in exact]
    by_remainder = sorted(range(len(counts)), key=lambda i: (-(exact[i] - int(exact[i])), i))
    short = n_rows - sum(scaled)
    for i in by_remainder[: max(0, short)]:
        scaled[i] += 1
    while sum(scaled) > n_rows:  # only when the floor of 1 lifted rare levels: trim the largest
        scaled[max(range(len(scaled)), key=lambda i: scaled[i])] -= 1
    return scaled


def missing_markers(n_rows: int) -> list[str]:
    """The missing-income markers (blank, NA, ?) scaled to the table's size."""
    levels = list(dict.fromkeys(MISSING_MARKERS))
    counts = [MISSING_MARKERS.count(m) for m in levels]
    share = round(len(MISSING_MARKERS) * n_rows / N_ROWS)
    scaled = scaled_counts(counts, max(len(levels), share))
    return [marker for marker, count in zip(levels, scaled) for _ in range(count)]


def _z(x: np.ndarray) -> np.ndarray:
    """Standardise an array to zero mean and unit variance."""
    return (x - x.mean()) / x.std()


def make_features(rng: np.random.Generator, n_rows: int = N_ROWS) -> pd.DataFrame:
    """Draw the 13 feature columns (income still complete)."""
    job = rng.permutation(np.repeat(JOB_CODES, scaled_counts(JOB_COUNTS, n_rows)))
    areas = scaled_counts(list(AREA_COUNTS.values()), n_rows)
    area = rng.permutation(np.repeat(list(AREA_COUNTS), areas))
    age = np.clip(np.round(rng.normal(40.5, 5.0, n_rows)), 29, 52).astype(int)
    income = 58633 + 420 * (age - 40.5) + rng.normal(0, 11500, n_rows)
    income += np.where(area == "b", 6000.0, 0.0)
    income = np.clip(income, 19800, 88700)
    pop = rng.beta(2.0, 3.0, n_rows)
    return pd.DataFrame(
        {
            "id": np.arange(1, n_rows + 1),
            "job": job,
            "area": area,
            "income": income,
            "aspect": rng.uniform(-3.0, 3.0, n_rows),
            "subscriptions": rng.binomial(5, 0.35, n_rows),
            "dist_healthy": rng.gamma(2.0, 1.5, n_rows),
            "save_rate": np.clip(
                np.round(rng.normal(130, 80, n_rows)), -119, 384
            ).astype(int),
            "dist_unhealthy": rng.gamma(3.0, 1.0, n_rows),
            "age": age,
            "pop_dense": pop,
            "retail_dense": pop * rng.beta(4.0, 3.0, n_rows),
            "crime": rng.gamma(2.5, 0.8, n_rows),
        }
    )


def make_logits(df: pd.DataFrame) -> np.ndarray:
    """Hand-made non-linear class logits (columns a..g) from the features."""
    inc, age, sav = (
        _z(df["income"].to_numpy()),
        _z(df["age"].to_numpy()),
        _z(df["save_rate"].to_numpy()),
    )
    asp, crime = df["aspect"].to_numpy(), _z(df["crime"].to_numpy())
    dh, du = df["dist_healthy"].to_numpy(), df["dist_unhealthy"].to_numpy()
    gap = np.abs(df["pop_dense"].to_numpy() - df["retail_dense"].to_numpy())
    area, job, subs = (
        df["area"].to_numpy(),
        df["job"].to_numpy(),
        df["subscriptions"].to_numpy(),
    )
    logits = np.zeros((len(df), len(PRODUCT_COUNTS)))
    logits[:, 0] = 2.5 * (dh < 1.2) * (sav > 0) + 1.5 * np.sin(2.0 * asp)  # a
    logits[:, 1] = 1.0 * (area == "a") - 2.0 * np.tanh(2.0 * inc * age)  # b
    logits[:, 2] = (
        1.0 * (area == "c")
        + 2.0 * np.tanh(2.0 * inc * age)
        + 0.8 * np.isin(job, ["pe", "11"])
    )  # c
    logits[:, 3] = 2.0 * (subs >= 3) * (crime > 0.5) + 1.0 * (area == "d")  # d
    logits[:, 4] = 2.0 * np.isin(job, ["f8", "e2", "10"]) + 1.0 * (du > 4.0)  # e
    logits[:, 5] = 6.0 * gap + 1.0 * (area == "b") - 1.5 * np.abs(sav)  # f
    logits[:, 6] = 3.0 * (inc > 1.0) * (age < -0.8)  # g
    return logits


def assign_products(
    logits: np.ndarray, rng: np.random.Generator, noise: float = 0.7
) -> np.ndarray:
    """Sample classes via noisy argmax, tuning class biases to hit the target counts."""
    n_rows = len(logits)
    target = np.array(scaled_counts(list(PRODUCT_COUNTS.values()), n_rows), dtype=float)
    tolerance = max(4, round(4 * n_rows / N_ROWS))  # 4 rows off at the bundled size
    scores = logits + noise * rng.gumbel(size=logits.shape)
    bias = np.log(target / target.sum())
    for _ in range(2000):
        counts = np.bincount(np.argmax(scores + bias, axis=1), minlength=len(target))
        if np.abs(counts - target).sum() <= tolerance:
            break
        bias += 0.02 * (np.log(target) - np.log(counts + 0.5))
    return np.array(list(PRODUCT_COUNTS))[np.argmax(scores + bias, axis=1)]


def make_frame(seed: int, n_rows: int = N_ROWS) -> pd.DataFrame:
    """Build the full stand-in table; income is returned as pre-formatted text."""
    if n_rows < MIN_ROWS:
        raise ValueError(f"--rows must be at least {MIN_ROWS} (every level must appear)")
    rng = np.random.default_rng(seed)
    df = make_features(rng, n_rows)
    df["product"] = assign_products(make_logits(df), rng)
    income = df["income"].map(lambda v: f"{v:.6f}").astype(object)
    markers = missing_markers(n_rows)
    missing = rng.choice(n_rows, size=len(markers), replace=False)
    income.iloc[missing] = rng.permutation(markers)
    df["income"] = income
    return df[COLUMNS]


def write_atomic(df: pd.DataFrame, out: Path) -> None:
    """Write the CSV to a temporary file beside ``out`` and move it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            df.to_csv(fh, index=False, float_format="%.6f", lineterminator="\n")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, generate the table and write it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=5583)
    parser.add_argument(
        "--rows", type=int, default=N_ROWS,
        help=f"rows to generate, same schema and proportions (default {N_ROWS}: the bundled file)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.rows < MIN_ROWS:
        parser.error(f"--rows must be at least {MIN_ROWS}")
    df = make_frame(args.seed, args.rows)
    write_atomic(df, args.out)
    print(f"wrote {len(df)} rows to {args.out}")


if __name__ == "__main__":
    main()
