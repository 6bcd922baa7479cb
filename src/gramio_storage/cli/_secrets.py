"""Credentials on the command line: ``${VAR}`` expansion and ``--env-file``.

Secrets reach the CLI without ever sitting in ``argv`` (which ``ps`` shows to every user): a URL
may reference environment variables (``redis://:${REDIS_PASSWORD}@host``), and ``--env-file``
loads them from a dotenv file. Masking is the library's one redactor
(:mod:`gramio_storage._redact`): URLs shown are :func:`~gramio_storage._redact.mask_url`-ed, and
everything printed goes through :meth:`Secrets.scrub`, a
:class:`~gramio_storage._redact.Redactor` that knows every password, token and expanded
variable value seen.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .._redact import Redactor, mask_url, url_secrets
from ._context import UsageError

__all__ = ["Secrets", "load_env_file", "mask_url", "process_environ"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
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
        if not sep or not _NAME.fullmatch(name):
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
        self._redactor = Redactor()
        for name, value in environ.items():
            if _SECRET_ENV.search(name):
                if name.upper().endswith(("_URL", "_DSN")):
                    self._redactor.add_url(value)
                else:
                    self._redactor.add(value)

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
            self._redactor.add(value)
            return value

        expanded = _VAR.sub(replace, url)
        self._redactor.add(*url_secrets(expanded))
        return expanded

    def scrub(self, text: str) -> str:
        """Return ``text`` with every known secret (and URL credential) replaced by ``***``."""
        return self._redactor(text)


def process_environ(extra: dict[str, str]) -> dict[str, str]:
    """The process environment with ``extra`` (from ``--env-file``) filling the gaps."""
    return {**extra, **os.environ}
