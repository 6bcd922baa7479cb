"""Checking a ``postgresql://`` DSN before asyncpg sees it, and what repr and errors may show.

asyncpg splits a DSN with :func:`urllib.parse.urlparse` and takes the credentials up to the
**first** ``@``: a password holding an unencoded ``/``, ``?``, ``#`` or ``@`` silently becomes
part of the host, path or query, and a fragment of it ends up in error messages. Such a DSN
is refused here, at construction, with a :class:`~gramio_storage.ConfigurationError` that
quotes no part of it; so is any other DSN asyncpg would misread (a bad port, a broken IPv6
address). Every secret the DSN holds is handed to the storage's
:class:`~gramio_storage._redact.Redactor` as well, raw and percent-decoded.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

from .._errors import ConfigurationError
from .._redact import Redactor

__all__ = ["Dsn", "parse_dsn"]

_SCHEMES = ("postgresql", "postgres")
# Query parameters asyncpg reads as secrets (the shared redactor knows `password` already).
_SECRET_PARAMS = ("password", "sslpassword")


class Dsn(NamedTuple):
    """What may be shown of a DSN; its secrets went to the redactor.

    Attributes:
        server: ``host:port`` (several, comma-separated), or the Unix socket default.
        database: The database name (empty: asyncpg's default, the user name).
    """

    server: str
    database: str


def _fail(problem: str) -> ConfigurationError:
    return ConfigurationError(f"Malformed PostgreSQL DSN: {problem}", backend="postgres")


def parse_dsn(dsn: str, redact: Redactor) -> Dsn:
    """Validate ``dsn`` and remember its secrets in ``redact``.

    Raises:
        ConfigurationError: Another scheme, unencoded special characters in the credentials,
            a bad port or host; the message never quotes the DSN.
    """
    redact.add_url(dsn)  # first, so that nothing below can show the password
    scheme, sep, rest = dsn.partition("://")
    if not sep or scheme not in _SCHEMES:
        shown = f"{scheme}://" if sep and scheme.isalnum() else "no postgresql:// scheme"
        raise ConfigurationError(
            f"PostgreSQL DSN must start with postgresql:// or postgres://, got {shown}",
            backend="postgres",
        )
    try:
        parts = urlsplit(dsn)
    except ValueError as e:  # "Invalid IPv6 URL"
        raise _fail(redact(str(e))) from None
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if "@" in userinfo or "@" in rest[len(parts.netloc) :]:
        # The credentials end at the last "@" (the redactor's reading), the authority at the
        # first "/", "?" or "#": they disagree only if the user name or password holds one of
        # those characters unencoded (or the path or query holds an "@").
        raise _fail(
            "an unencoded '/', '?', '#' or '@' in the user name or password (or an '@' after "
            "the host); percent-encode them, for example with urllib.parse.quote(password, "
            "safe='')"
        )
    if at:
        _, colon, password = userinfo.partition(":")
        if colon and password:
            redact.add(password, unquote(password))
    try:
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
    except ValueError as e:
        raise _fail(redact(str(e))) from None
    for name in _SECRET_PARAMS:
        redact.add(query.get(name))
    for host in filter(None, hosts.split(",")):
        _check_port(host.rpartition("]")[2] if host.startswith("[") else host)
    # asyncpg's default, with no host anywhere, is the local Unix socket, else localhost.
    server = hosts or query.get("host") or "localhost"
    return Dsn(redact(server), redact(unquote(parts.path.lstrip("/"))))


def _check_port(host: str) -> None:
    _, colon, port = host.rpartition(":")
    if colon and not (port.isdigit() and 0 < int(port) < 65536):
        raise _fail("a port must be a number from 1 to 65535")
