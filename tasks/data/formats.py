"""Name a file's format from its magic bytes: one sniffer for downloading and for reading."""

from __future__ import annotations

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
