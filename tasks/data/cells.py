"""A table's cells as resolving and typing both read them: stripped text, kept rows, numbers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from tasks.errors import DataValidationError

Warn = Callable[[str], None]

SHOWN_ROWS = 5  # how many rows an error or warning lists before "..."


def row_label(position: int) -> str:
    """Name a row the way a user finds it in the file: data row and line number."""
    return f"row {position + 1} (line {position + 2})"


def rows_text(positions: np.ndarray) -> str:
    """A few row labels, then how many more."""
    shown = ", ".join(row_label(int(p)) for p in positions[:SHOWN_ROWS])
    more = len(positions) - SHOWN_ROWS
    return shown + (f" and {more} more" if more > 0 else "")


def missing_rows(series: pd.Series) -> np.ndarray:
    """Positions of the missing cells, to name them in messages."""
    return np.flatnonzero(series.isna().to_numpy())


def class_text(value: float) -> str:
    """A numeric class label as text: integers without '.0', other numbers round-trip exact."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def fits_int64(series: pd.Series) -> bool:
    """Integer text within int64, so the id can be stored as today's int64 column exactly."""
    present = series.dropna()
    if not len(present) or not bool(present.str.fullmatch(r"[+-]?\d+").all()):
        return False
    return all(-(2**63) <= int(v) < 2**63 for v in present)


def _normalise(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Strip surrounding whitespace from names and cells (blank becomes missing); count changes."""
    out = {}
    changed: dict[str, int] = {}
    for name in frame.columns:
        raw = frame[name].astype("string")
        stripped = raw.str.strip()
        n = int((stripped != raw).fillna(False).sum())
        if n:
            changed[str(name)] = n
        out[str(name).strip()] = stripped.mask(stripped == "")
    return pd.DataFrame(out, index=pd.RangeIndex(len(frame))), changed


def _numbers(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Parse text as float64 (NaN for missing); also return where a present cell is not a number."""
    parsed = pd.to_numeric(series, errors="coerce")
    values = parsed.to_numpy(dtype="float64", na_value=np.nan)
    bad = np.isnan(values) & series.notna().to_numpy()
    return values, bad


class Cells:
    """Stripped cells, kept rows and parsed numbers, shared so nothing is parsed twice."""

    def __init__(self, frame: pd.DataFrame, label: str, warn: Warn | None = None) -> None:
        self.label = label  # every message names the file
        self.notes: list[str] = []  # every warning, for the resolved spec
        self._warn = warn
        self.frame, self.stripped = _normalise(frame)
        self.columns = list(self.frame.columns)
        self.renamed = [str(c) for c in frame.columns if str(c) != str(c).strip()]
        self.keep_rows(None)

    def warn(self, message: str) -> None:
        """Tell the caller now and keep the message for the resolved spec."""
        self.notes.append(message)
        if self._warn is not None:
            self._warn(message)

    def fail(self, message: str) -> DataValidationError:
        """An error that names the file."""
        return DataValidationError(f"{self.label}: {message}")

    def keep_rows(self, target: str | None) -> None:
        """Keep the rows whose target is present (all rows for None): the rows typed and fitted."""
        if target is None:
            self.keep = np.ones(len(self.frame), dtype=bool)
            self.kept = self.frame
        else:
            self.keep = self.frame[target].notna().to_numpy()
            self.kept = self.frame[self.keep].reset_index(drop=True)
        self.positions = np.flatnonzero(self.keep)  # file positions of the rows kept
        self._numbers: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def numbers(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A kept column as float64 and where a present cell is no number, parsed on first use."""
        if name not in self._numbers:
            self._numbers[name] = _numbers(self.kept[name])
        return self._numbers[name]

    def check_numbers(self, name: str) -> np.ndarray:
        """A column that must be numbers, as float64; the first cell that is not one is refused."""
        values, bad = self.numbers(name)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise self.fail(
                f"column {name!r} {row_label(int(self.positions[first]))} has non-numeric value "
                f"{self.kept[name].iloc[first]!r}; expected a number"
            )
        return values

    def check_finite(self, name: str, values: np.ndarray) -> None:
        """Infinite numbers (inf, 1e400) would train on garbage: refuse them, naming rows."""
        infinite = np.flatnonzero(np.isinf(values))
        if len(infinite):
            raise self.fail(
                f"column {name!r} has non-finite numbers (inf, -inf or beyond float range) at "
                f"{rows_text(self.positions[infinite])}; expected finite numbers"
            )
