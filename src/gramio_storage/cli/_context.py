"""Exit codes, CLI errors and the per-run context every command receives."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._storage import BaseStorage
    from ._secrets import Secrets

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_PIPE",
    "EXIT_USAGE",
    "CliError",
    "Context",
    "NotFoundError",
    "UsageError",
]

# The exit codes scripts can rely on (documented in docs/cli.md).
EXIT_OK = 0
EXIT_ERROR = 1  # the operation failed: backend unreachable, malformed input file, I/O error...
EXIT_USAGE = 2  # the command line is wrong: arguments, URL, scheme, JSON value, TTL
EXIT_NOT_FOUND = 3  # get/ttl: the key does not exist
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_PIPE = 141  # the reader of stdout went away (128 + SIGPIPE), e.g. `... | head`


# Schemes whose backends can open a storage read-only, and the option that asks for it
# (storage_from_url passes options to the backend). SQLite: a read-only open never creates the
# database file, so `ls sqlite:///typo.db` fails instead of printing an empty listing.
_READ_ONLY: dict[str, dict[str, object]] = {"sqlite": {"read_only": True}}


class CliError(Exception):
    """An error reported as one line on stderr, with its exit code."""

    exit_code = EXIT_ERROR


class UsageError(CliError):
    """The command line is wrong."""

    exit_code = EXIT_USAGE


class NotFoundError(CliError):
    """The key the command is about does not exist."""

    exit_code = EXIT_NOT_FOUND


@dataclass
class Context:
    """What every command gets besides its arguments.

    Attributes:
        secrets: Expands ``${VAR}`` in URLs and scrubs secrets from anything printed.
        quiet: Suppress informational lines and progress bars on stderr.
    """

    secrets: Secrets
    quiet: bool = False

    def open(self, url: str, what: str = "URL", *, read_only: bool = False) -> BaseStorage:
        """Build the storage a URL names (after ``${VAR}`` expansion).

        With ``read_only`` (commands that only read), a backend that can open read-only does
        so (SQLite): a mistyped path is then an error instead of a new, empty database.
        """
        from .._registry import storage_from_url  # keeps --help fast

        expanded = self.secrets.expand(url, what)
        options: dict[str, object] = {}
        if read_only:
            options = _READ_ONLY.get(expanded.partition("://")[0].lower(), {})
        return storage_from_url(expanded, **options)

    def info(self, message: str) -> None:
        """An informational line on stderr (not with ``--quiet``), scrubbed of secrets."""
        if not self.quiet:
            print(self.secrets.scrub(message), file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        """A warning on stderr, shown even with ``--quiet``."""
        print(f"gramio-storage: warning: {self.secrets.scrub(message)}", file=sys.stderr)
