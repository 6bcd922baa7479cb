"""Credentials on the command line: ``${VAR}`` expansion, ``--env-file``, masking and scrubbing.

Secrets reach the CLI without ever sitting in ``argv`` (which ``ps`` shows to every user): a URL
may reference environment variables (``redis://:${REDIS_PASSWORD}@host``), and ``--env-file``
loads them from a dotenv file. Everything the CLI prints goes through :meth:`Secrets.scrub`, which
replaces every password, token and expanded variable value with ``***``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from ._context import UsageError

__all__ = ["Secrets", "load_env_file", "mask_url", "process_environ"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Query parameters whose values are credentials, whatever the backend.
_SECRET_PARAMS = frozenset({"password", "pass", "token", "api_token", "secret", "key", "api_key"})
_MASK = "***"
# Values shorter than this are not scrubbed from free text: replacing every "a" in a message
# because a variable held "a" would garble it, and such a value protects nothing.
_MIN_SCRUB = 3
# Environment variables whose values are credentials even when no URL mentions them (a backend
# may read CLOUDFLARE_API_TOKEN itself): their values are scrubbed from output too.
_SECRET_ENV = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|API_KEY|CREDENTIAL|_DSN$|_URL$", re.I)


def load_env_file(path: str) -> dict[str, str]:
    """Read ``NAME=value`` lines from a dotenv file (``#`` comments, optional quotes, ``export``).

    Raises:
        UsageError: The file cannot be read or a line is not an assignment (names the line).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot read --env-file {path!r}: {e.strerror or e}") from e
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            # Never quote the line: it may hold a secret.
            raise UsageError(f"--env-file {path!r}, line {number}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


class Secrets:
    """Expands URLs and remembers every secret seen, so that output can be scrubbed of them.

    Args:
        environ: Where ``${VAR}`` references are looked up (the process environment, plus
            ``--env-file`` values that the environment does not override).
    """

    def __init__(self, environ: dict[str, str]) -> None:
        self._environ = environ
        self._secrets: set[str] = set()
        for name, value in environ.items():
            if _SECRET_ENV.search(name):
                if name.upper().endswith(("_URL", "_DSN")):
                    for secret in _url_secrets(value):
                        self._remember(secret)
                else:
                    self._remember(value)

    def expand(self, url: str, what: str = "URL") -> str:
        """Replace ``${VAR}`` references in ``url`` and remember the URL's secrets.

        Raises:
            UsageError: A referenced variable is not set (names the variable, not a value).
        """

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self._environ:
                raise UsageError(
                    f"{what} references ${{{name}}}, but the environment variable {name} is "
                    "not set (export it or pass --env-file)"
                )
            value = self._environ[name]
            self._remember(value)
            return value

        expanded = _VAR.sub(replace, url)
        for secret in _url_secrets(expanded):
            self._remember(secret)
        return expanded

    def _remember(self, value: str) -> None:
        if len(value) >= _MIN_SCRUB:
            self._secrets.add(value)

    def scrub(self, text: str) -> str:
        """Return ``text`` with every known secret replaced by ``***`` (longest first)."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, _MASK)
        return text


def _url_secrets(url: str) -> list[str]:
    """The password and credential-like query values of a URL (raw and percent-decoded)."""
    try:
        parts = urlsplit(url)
        found: list[str] = []
        if parts.password:
            found.append(parts.password)
            raw = parts.netloc.rpartition("@")[0].partition(":")[2]
            if raw:
                found.append(raw)
        for name, value in parse_qsl(parts.query, keep_blank_values=False):
            if name.lower() in _SECRET_PARAMS and value:
                found.append(value)
        return found
    except ValueError:  # a malformed URL (bad port...): the backend will say what is wrong
        return []


def mask_url(url: str) -> str:
    """``url`` with its password and credential query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if not _url_secrets(url):
            return url  # unchanged (rebuilding would also drop the "//" of sqlite:///path)
        if "@" in netloc:
            userinfo, _, host = netloc.rpartition("@")
            user, colon, password = userinfo.partition(":")
            if colon and password:
                netloc = f"{user}:{_MASK}@{host}"
        query = parts.query
        if query:
            pairs = []
            for pair in query.split("&"):
                name, eq, value = pair.partition("=")
                if eq and value and name.lower() in _SECRET_PARAMS:
                    pair = f"{name}={_MASK}"
                pairs.append(pair)
            query = "&".join(pairs)
        return parts._replace(netloc=netloc, query=query).geturl()
    except ValueError:
        return _MASK


def process_environ(extra: dict[str, str]) -> dict[str, str]:
    """The process environment with ``extra`` (from ``--env-file``) filling the gaps."""
    return {**extra, **os.environ}
