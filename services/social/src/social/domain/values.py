"""Validation and normalization of the values users type in: emails, names, URLs, text."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urlsplit

from .errors import InvalidValue

__all__ = [
    "MAX_CONTENT",
    "MIN_PASSWORD",
    "email_key",
    "is_clean_text",
    "normalize_email",
    "validate_avatar_url",
    "validate_content",
    "validate_display_name",
    "validate_password",
]

MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_DISPLAY_NAME = 100
MAX_AVATAR_URL = 2048
MAX_CONTENT = 5000
MAX_EMAIL = 254

# One "@", no whitespace, a dot in the domain: deliverability is the mail server's call.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
_UNSTORABLE = re.compile("[\ud800-\udfff]")


def is_clean_text(value: str) -> bool:
    """No NUL and no lone surrogate: text every database and UTF-8 encoder can store."""
    return "\x00" not in value and not _UNSTORABLE.search(value)


def _check_text(field: str, value: str) -> None:
    if not is_clean_text(value):
        raise InvalidValue(field, "contains characters that are not allowed")


def normalize_email(email: str) -> str:
    """Trimmed, domain lower-cased (the local part keeps its case, as mail servers may)."""
    _check_text("email", email)
    email = email.strip()
    if len(email) > MAX_EMAIL or not _EMAIL.match(email):
        raise InvalidValue("email", "not a valid email address")
    local, _, domain = email.rpartition("@")
    return f"{local}@{domain.lower()}"


def email_key(email: str) -> str:
    """The identity of an address, what uniqueness and login compare: however it is
    spelled, one account. Unicode normalization (NFC: a composed and a decomposed "é" are
    one letter) and case folding (finer than lower(): "ß" and "SS" fold alike), then NFC
    again (folding may decompose, as "İ" does)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", email.strip()).casefold())


def validate_password(password: str) -> None:
    """Checks the length (and that it can be encoded); the message never repeats it."""
    _check_text("password", password)
    if len(password) < MIN_PASSWORD:
        raise InvalidValue("password", f"must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InvalidValue("password", f"must be at most {MAX_PASSWORD} characters")


def validate_display_name(name: str) -> str:
    _check_text("display_name", name)
    name = name.strip()
    if not 1 <= len(name) <= MAX_DISPLAY_NAME:
        raise InvalidValue("display_name", f"must be 1 to {MAX_DISPLAY_NAME} characters")
    return name


def validate_avatar_url(url: str) -> str:
    _check_text("avatar_url", url)
    url = url.strip()
    if len(url) > MAX_AVATAR_URL:
        raise InvalidValue("avatar_url", f"must be at most {MAX_AVATAR_URL} characters")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise InvalidValue("avatar_url", "not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in url):
        raise InvalidValue("avatar_url", "must be an http or https URL")
    return url


def validate_content(content: str) -> str:
    _check_text("content", content)
    if not content.strip():
        raise InvalidValue("content", "must not be empty")
    if len(content) > MAX_CONTENT:
        raise InvalidValue("content", f"must be at most {MAX_CONTENT} characters")
    return content
