"""Credential redaction: a source URL may carry a password or a signed token, never print them.

`redact_source` masks what URL syntax marks as secret (user-info, secret query parameters);
`redact_text` also masks the raw pieces of one known source wherever they appear in free text
(an httpx or fsspec error may echo them in other forms).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote, unquote_plus, urlsplit

MASK = "***"

# Query (or fragment) parameters whose value grants access; compared case-insensitively.
# "sig" is the signature of an Azure SAS URL; its other fields ("se", "sp", "sv") are not secret.
SECRET_PARAMS = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "sig",
        "signature",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
        "key",
        "api_key",
        "apikey",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "code",
    }
)

# Shorter secrets are masked only where URL syntax marks them: masking every "ab" in a message
# would make it unreadable.
_MIN_FREE_TEXT_SECRET = 4

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s<>\"'`]+")
_TRAILING_PROSE = ".,;:!?)]}"


def _mask_params(params: str) -> str:
    """Mask the value of each secret `name=value` pair, keeping names and order as written."""
    pieces = []
    for piece in params.split("&"):
        name, eq, _value = piece.partition("=")
        secret = eq and unquote_plus(name).strip().lower() in SECRET_PARAMS
        pieces.append(f"{name}={MASK}" if secret else piece)
    return "&".join(pieces)


def _redact_url(url: str) -> str:
    """Mask the user-info and secret parameters of one URL; leave every other character as is."""
    scheme, _, rest = url.partition("://")
    authority = re.match(r"[^/?#]*", rest).group()  # type: ignore[union-attr]
    tail = rest[len(authority) :]
    if "@" in authority:
        authority = f"{MASK}@{authority.rpartition('@')[2]}"
    tail, hash_, fragment = tail.partition("#")
    path, question, query = tail.partition("?")
    if question:
        query = _mask_params(query)
    if hash_:
        fragment = _mask_params(fragment)
    return f"{scheme}://{authority}{path}{question}{query}{hash_}{fragment}"


def _redact_match(match: re.Match[str]) -> str:
    """Redact a URL found in prose, leaving punctuation that ends the sentence outside it."""
    found = match.group()
    url = found.rstrip(_TRAILING_PROSE)
    return _redact_url(url) + found[len(url) :]


def redact_source(text: str) -> str:
    """Return `text` with every URL's user-info and secret parameters masked, for display.

    A bare URL is redacted as a whole; in longer text each URL is found and redacted. Paths and
    text without URLs come back unchanged, as do URLs that hold nothing secret.
    """
    if _URL.fullmatch(text):
        return _redact_url(text)
    return _URL.sub(_redact_match, text)


def _secret_parts(source: str) -> set[str]:
    """The raw and decoded pieces of `source` that must not appear anywhere in a message."""
    try:
        parts = urlsplit(source)
    except ValueError:  # e.g. an invalid IPv6 host: fall back to URL-syntax masking only
        return set()
    found: set[str] = set()
    userinfo, at, _host = parts.netloc.rpartition("@")
    if at:
        found.add(userinfo)
        found.add(unquote(userinfo))
        _user, colon, password = userinfo.partition(":")
        if colon:
            found.add(password)
            found.add(unquote(password))
    for params in (parts.query, parts.fragment):
        for piece in params.split("&"):
            name, eq, value = piece.partition("=")
            if eq and unquote_plus(name).strip().lower() in SECRET_PARAMS:
                found.add(value)
                found.add(unquote_plus(value))
    return {s for s in found if len(s) >= _MIN_FREE_TEXT_SECRET}


def redact_text(message: str, source: str) -> str:
    """Return `message` safe to log: the source, its password and tokens masked wherever they are.

    Covers error text that echoes the URL (or pieces of it, decoded) and any other URL in it
    (a redirect target with a signature).
    """
    shown = redact_source(source)
    text = message.replace(source, shown) if source else message
    for secret in sorted(_secret_parts(source), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return redact_source(text)


class RedactURLs(logging.Filter):
    """Logging filter that masks credentials in any URL a record's message holds.

    Libraries log the URLs they fetch (httpx logs each request at INFO), secrets included.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place when its message holds a secret; never drop it."""
        message = record.getMessage()
        safe = redact_source(message)
        if safe != message:
            record.msg, record.args = safe, None
        return True


def redact_library_logs(*names: str) -> None:
    """Attach RedactURLs to the named loggers (once each), so their records are safe to ship."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactURLs) for f in logger.filters):
            logger.addFilter(RedactURLs())


__all__: list[str] = [
    "MASK",
    "SECRET_PARAMS",
    "RedactURLs",
    "redact_library_logs",
    "redact_source",
    "redact_text",
]
