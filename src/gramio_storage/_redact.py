"""One secret redactor for ``repr``, error messages, logs and the CLI.

URLs are masked without trusting a URL parser: a password holding an unencoded ``/``, ``?``,
``#`` or ``@`` makes :func:`urllib.parse.urlsplit` cut the authority short and show the rest of
the password as a path, query or fragment. :func:`mask_url` instead takes everything between
``scheme://`` and the **last** ``@`` before the host as credentials. :class:`Redactor` also
remembers secret strings (a password, a token, in raw and percent-decoded form) and scrubs them
out of any text, such as a driver's error message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote

__all__ = ["MASK", "Redactor", "mask_url", "url_secrets"]

MASK = "***"
# Query parameters whose values are credentials, whatever the backend.
SECRET_PARAMS = frozenset(
    {"password", "pass", "passwd", "token", "api_token", "secret", "key", "api_key", "auth"}
)
# Schemes whose URLs carry a file path, never credentials: an "@" there is part of the path.
_PATH_SCHEMES = frozenset({"sqlite", "memory", "file"})
# Secrets shorter than this are not scrubbed from free text: replacing every "a" in a message
# because a password was "a" would garble it and protect nothing.
_MIN_SCRUB = 3
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:" + "|".join(sorted(SECRET_PARAMS)) + r")=)[^&#;\s]*"
)


def _split(url: str) -> tuple[str, str, str] | None:
    """``(scheme://, credentials, rest)`` or None when the URL has no credentials part."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() in _PATH_SCHEMES:
        return None
    at = rest.rfind("@")
    if at < 0:
        return None
    return scheme + sep, rest[:at], rest[at + 1 :]


def url_secrets(url: str) -> list[str]:
    """The secret strings in ``url`` (password, secret query values), raw and percent-decoded."""
    found: list[str] = []
    parts = _split(url)
    rest = url
    if parts is not None:
        _, creds, rest = parts
        _, colon, password = creds.partition(":")
        if colon and password:
            found += [password, unquote(password)]
        elif creds and not colon:
            found += [creds, unquote(creds)]  # a token as the user name (redis://token@host)
    query = rest.partition("?")[2].partition("#")[0]
    for name, value in parse_qsl(query, keep_blank_values=False):
        if name.lower() in SECRET_PARAMS and value:
            found += [value]
    return [s for s in dict.fromkeys(found) if s]


def mask_url(url: str) -> str:
    """``url`` with its password and secret query values replaced by ``***``.

    ``redis://:p/w?x#y@host:6379/0`` becomes ``redis://:***@host:6379/0``; a user name is kept.
    """
    parts = _split(url)
    if parts is not None:
        head, creds, rest = parts
        user, colon, _ = creds.partition(":")
        if colon:
            creds = f"{user}:{MASK}"
        elif creds:
            creds = MASK
        url = f"{head}{creds}@{rest}"
    return _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, url)


class Redactor:
    """Remembers secrets and scrubs them (and any credentials in URLs) out of text."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Remember more secrets (``None`` and empty strings are ignored)."""
        for secret in secrets:
            if secret and secret not in self._secrets:
                self._secrets.append(secret)
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets.sort(key=len, reverse=True)

    def add_url(self, url: str) -> None:
        """Remember the secrets a URL carries."""
        self.add(*url_secrets(url))

    def __call__(self, text: str) -> str:
        """``text`` with every remembered secret and every URL credential masked."""
        for secret in self._secrets:
            if len(secret) >= _MIN_SCRUB or secret == text:
                text = text.replace(secret, MASK)
        return _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, text)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"
