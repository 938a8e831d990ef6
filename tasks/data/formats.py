"""Name a file's format from its magic bytes: one sniffer for downloading and for reading."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Literal

Format = Literal["parquet", "gzip", "zip", "csv"]

_MAGIC: tuple[tuple[bytes, Format], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"PK\x03\x04", "zip"),
    (b"PAR1", "parquet"),
)


def sniff_format(head: bytes) -> Format | None:
    """Name a compressed/binary format from its magic bytes, since URLs and suffixes can lie."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def detect_format(path: str) -> Format:
    """Trust the content's magic bytes first: downloads are often saved under another name."""
    with open(path, "rb") as handle:
        return sniff_format(handle.read(4)) or "csv"


# Tables foldflow does not read, named so the error says what the file is (issue 19).
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # the compound-file header of .xls (Excel 97-2003)
_SUFFIX_KINDS = {
    ".json": "JSON", ".jsonl": "JSON Lines", ".ndjson": "JSON Lines",
    ".xlsx": "Excel (xlsx)", ".xlsm": "Excel (xlsx)", ".xls": "Excel (xls)", ".ods": "OpenDocument",
}  # fmt: skip
_JSON_OBJECT = re.compile(r'\{\s*("|\})')  # JSON object keys are always quoted
_JSON_ARRAY = re.compile(r'\[\s*(\{|\[|"|\])')


def excel_kind(path: str) -> str | None:
    """'Excel (xls)' or 'Excel (xlsx)' when the bytes are a workbook (an xlsx is a zip)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(_OLE2):
        return "Excel (xls)"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (OSError, zipfile.BadZipFile):
            return None
        if "[Content_Types].xml" in names and any(n.startswith("xl/") for n in names):
            return "Excel (xlsx)"
    return None


def json_kind(text: str) -> str | None:
    """'JSON' or 'JSON Lines' when the (decompressed) text starts like a JSON document."""
    body = text.lstrip("\ufeff \t\r\n")
    if _JSON_ARRAY.match(body):
        return "JSON"
    if not _JSON_OBJECT.match(body):
        return None
    first, _, rest = body.partition("\n")
    try:
        json.loads(first)
    except ValueError:
        return "JSON"  # an object over several lines
    return "JSON Lines" if rest.lstrip().startswith("{") else "JSON"


def suffix_kind(path: str) -> str | None:
    """The unsupported format a file's name claims (.json, .xlsx, ...), if any."""
    return _SUFFIX_KINDS.get(Path(path).suffix.lower())
