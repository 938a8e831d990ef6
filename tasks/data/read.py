"""Read CSV (plain, gzip, zip) or Parquet into all-text columns, refusing unreadable files."""

from __future__ import annotations

import csv
import gzip
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.data.formats import detect_format, excel_kind, json_kind, suffix_kind
from tasks.data.spec import DataSpec, expand_preset
from tasks.errors import DataValidationError

SNIFF_BYTES = 16 * 1024
SUPPORTED = "foldflow reads CSV (plain, gzip, zip) and Parquet"


def _head_text(path: str, fmt: str, label: str) -> str:
    """The first few KB of (decompressed) text, cut at a line end, for sniffing the delimiter."""
    try:
        if fmt == "gzip":
            with gzip.open(path, "rb") as handle:
                blob = handle.read(SNIFF_BYTES)
        elif fmt == "zip":
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if not n.endswith("/")]
                if len(names) != 1:
                    raise DataValidationError(
                        f"{label}: a zip file must hold exactly one CSV file; found {names}"
                    )
                with archive.open(names[0]) as handle:
                    blob = handle.read(SNIFF_BYTES)
        else:
            with open(path, "rb") as handle:
                blob = handle.read(SNIFF_BYTES)
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        kind = {"gzip": "gzip-compressed", "zip": "a zip archive"}.get(fmt, "a file")
        raise DataValidationError(f"{label}: is {kind} but cannot be read: {err}") from None
    if len(blob) == SNIFF_BYTES and b"\n" in blob:
        blob = blob[: blob.rindex(b"\n")]
    return blob.decode("utf-8-sig", errors="replace")


def sniff_delimiter(sample: str) -> str:
    """Pick , ; tab or | from the sample's structure; a plain comma when it is unclear."""
    lines = [line for line in sample.splitlines() if line.strip()]
    if not lines:
        return ","
    try:
        return csv.Sniffer().sniff("\n".join(lines[:50]), delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _utf8_error(path: str, fmt: str, label: str) -> DataValidationError | None:
    """Locate the first invalid UTF-8 byte by offset and line, as a user can find it."""
    if fmt == "gzip":
        blob, where = gzip.open(path, "rb").read(), " of the gzip-compressed content"
    elif fmt == "zip":
        with zipfile.ZipFile(path) as archive:
            blob = archive.read(archive.namelist()[0])
        where = " of the zipped file"
    else:
        blob, where = Path(path).read_bytes(), ""
    try:
        blob.decode("utf-8")
    except UnicodeDecodeError as err:
        line = blob.count(b"\n", 0, err.start) + 1
        return DataValidationError(
            f"{label}: not valid UTF-8 at byte {err.start}{where} (line {line}, "
            f"{blob[err.start : err.start + 1]!r}); save the file as UTF-8"
        )
    return None


def _read_csv(path: str, fmt: str, label: str, spec: DataSpec) -> pd.DataFrame:
    """Every column as exact text, so ids and numbers are typed by us, not guessed by pandas."""
    delimiter = spec.delimiter or sniff_delimiter(_head_text(path, fmt, label))
    compression = {"gzip": "gzip", "zip": "zip"}.get(fmt)
    options: dict[str, Any] = dict(
        sep=delimiter,
        dtype="string",
        keep_default_na=True,
        na_values=list(spec.na_values),
        encoding="utf-8-sig",
        compression=compression,
    )
    try:
        exact = {**options, "keep_default_na": False, "na_values": None}  # "NA" can be a name
        header = pd.read_csv(path, header=None, nrows=1, **exact)
        frame = pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        raise DataValidationError(
            f"{label}: the file is empty; expected a CSV with a header row"
        ) from None
    except UnicodeDecodeError:
        error = _utf8_error(path, fmt, label)
        if error is not None:
            raise error from None
        raise
    except pd.errors.ParserError as err:
        raise DataValidationError(f"{label}: malformed CSV: {err}") from err
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as err:
        kind = {"gzip": "gzip-compressed", "zip": "a zip archive"}.get(fmt, "a CSV file")
        raise DataValidationError(f"{label}: is {kind} but cannot be read: {err}") from err
    names = [str(n) for n in header.iloc[0].tolist()] if len(header) else []
    _check_header(names, label)
    return frame


def _check_header(names: list[str], label: str) -> None:
    """Refuse duplicate or blank column names instead of letting pandas rename them."""
    seen: dict[str, int] = {}
    for i, name in enumerate(n.strip() for n in names):
        if not name:
            raise DataValidationError(f"{label}: column {i + 1} of the header has no name")
        if name in seen:
            raise DataValidationError(
                f"{label}: column name {name!r} appears twice in the header "
                f"(columns {seen[name] + 1} and {i + 1}); names must be unique"
            )
        seen[name] = i


def _read_parquet(path: str, label: str, spec: DataSpec) -> pd.DataFrame:
    """Parquet columns cast to exact text (ints digit for digit, floats shortest round trip)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise DataValidationError(f"{label}: not a readable Parquet file: {err}") from err
    _check_header(list(table.column_names), label)
    columns = {}
    for name, column in zip(table.column_names, table.columns):
        kind = column.type
        if pa.types.is_dictionary(kind):
            column = column.cast(kind.value_type)
        if pa.types.is_floating(column.type):  # NaN is missing, not the text "nan"
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
        try:
            text = pc.cast(column, pa.string())
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as err:
            raise DataValidationError(
                f"{label}: column {name!r} has type {kind}, which is not a table cell type"
            ) from err
        series = pd.Series(text.to_pylist(), dtype="string", name=name)
        if spec.na_values:
            series = series.mask(series.isin(spec.na_values))
        columns[name] = series
    return pd.DataFrame(columns)


def _refuse_unsupported(path: str, fmt: str, label: str) -> None:
    """JSON, JSON Lines and Excel are refused by name, not misread as a CSV (content first)."""
    kind = excel_kind(path) or json_kind(_head_text(path, fmt, label)) or suffix_kind(path)
    if kind is not None:
        raise DataValidationError(
            f"{label}: unsupported format: {kind}; {SUPPORTED} (save the table as one of them)"
        )


def read_table(path: str, label: str, spec: DataSpec) -> pd.DataFrame:
    """Read CSV (plain, gzip, zip) or Parquet into all-text columns with missing cells as NA."""
    spec = expand_preset(spec)
    if Path(path).stat().st_size == 0:
        raise DataValidationError(f"{label}: the file is empty; expected a CSV with a header row")
    fmt = detect_format(path)
    if fmt != "parquet":
        _refuse_unsupported(path, fmt, label)
    if fmt == "csv" and str(path).lower().endswith(".parquet"):
        raise DataValidationError(f"{label}: named .parquet but is not a Parquet file")
    frame = (
        _read_parquet(path, label, spec) if fmt == "parquet" else _read_csv(path, fmt, label, spec)
    )
    if frame.empty:
        raise DataValidationError(f"{label}: header only, no data rows")
    return frame


__all__ = ["read_table", "sniff_delimiter"]
