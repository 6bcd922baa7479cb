"""The ``gramio-storage`` command line: argument parsing, dispatch, errors and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence

from .._errors import (
    ConfigurationError,
    InvalidKeyError,
    InvalidTTLError,
    KeyNotFoundError,
    MissingDependencyError,
    StorageError,
)
from ._context import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_PIPE,
    EXIT_USAGE,
    CliError,
    Context,
)
from ._secrets import Secrets, load_env_file, process_environ

__all__ = ["build_parser", "main"]

PROG = "gramio-storage"

Command = Callable[[Context, argparse.Namespace], Awaitable[int]]

_DESCRIPTION = """\
Inspect, edit, export, import and migrate a gramio-storage storage.

URL is anything storage_from_url accepts: sqlite:///bot.db, redis://host:6379/0,
postgresql://user@host/db, cloudflare://..., memory:// (this process only).
Put secrets in the environment, not on the command line: a URL may reference
variables as ${NAME} (single-quote it so the shell leaves it alone), and
--env-file loads them from a dotenv file. Passwords are never printed.
"""

_EPILOG = """\
exit codes:
  0    success
  1    the operation failed (backend unreachable or erroring, malformed import
       file, missing optional dependency, I/O error)
  2    usage error (bad arguments, URL, unknown scheme, invalid JSON VALUE, TTL)
  3    get/ttl: the key does not exist
  130  interrupted (Ctrl-C)
  141  stdout was closed by its reader (e.g. piped into head)

examples:
  gramio-storage ls sqlite:///bot.db --prefix session:
  gramio-storage get 'redis://:${REDIS_PASSWORD}@localhost:6379/0' user:42
  gramio-storage export sqlite:///bot.db -o backup.jsonl
  gramio-storage copy sqlite:///bot.db redis://localhost:6379/0
"""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render ``--help`` in the docs)."""
    from . import _inspect as i
    from . import _transfer as t

    # Options accepted before or after the command; SUPPRESS keeps a subcommand's default
    # from overwriting a value given before the command.
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("global options")
    g.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback on errors",
    )
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no informational lines or progress bars on stderr",
    )
    g.add_argument(
        "--env-file",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="load ${NAME} variables from a dotenv file (the environment wins)",
    )

    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, func: Command, help: str, description: str | None = None
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description or help, parents=[common])
        p.set_defaults(func=func)
        return p

    def batch(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--batch-size",
            type=_positive_int,
            default=500,
            metavar="N",
            help="keys per round trip (default: 500)",
        )

    def overwrite(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument(
            "--overwrite",
            action=argparse.BooleanOptionalAction,
            default=True,
            help=f"replace keys that already exist in {what} (default); "
            "--no-overwrite leaves them alone",
        )
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="read everything and report what would be written; write nothing",
        )
        p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")

    p = command("ls", i.cmd_ls, "list keys with their TTL and value size")
    p.add_argument("url", metavar="URL")
    p.add_argument("--prefix", default="", help="only keys starting with this (literally)")
    p.add_argument(
        "--limit",
        type=int,
        default=1000,
        metavar="N",
        help="list at most N keys (default: 1000; 0: all)",
    )
    p.add_argument("--json", action="store_true", help="a JSON array of {key, ttl, size}")

    p = command("get", i.cmd_get, "print the value stored under KEY (pretty JSON)")
    p.add_argument("url", metavar="URL")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--raw", action="store_true", help="the stored bytes, exactly")

    p = command(
        "set",
        i.cmd_set,
        "store a JSON VALUE under KEY",
        "Store a JSON VALUE under KEY ('-' reads it from stdin). A string must be "
        "quoted as JSON: '\"hello\"'.",
    )
    p.add_argument("url", metavar="URL")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    p.add_argument("--ttl", type=_positive_float, metavar="SECONDS", help="expire after this")

    p = command("del", i.cmd_del, "delete keys")
    p.add_argument("url", metavar="URL")
    p.add_argument("keys", metavar="KEY", nargs="+")
    p.add_argument("--json", action="store_true", help="print {deleted, requested} as JSON")

    p = command("ttl", i.cmd_ttl, "print the seconds KEY has left")
    p.add_argument("url", metavar="URL")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--json", action="store_true", help="print {key, ttl} as JSON")

    p = command("stats", i.cmd_stats, "count keys and bytes, overall and by prefix")
    p.add_argument("url", metavar="URL")
    p.add_argument("--prefix", default="", help="only keys starting with this (literally)")
    p.add_argument("--separator", default=":", help="key segment separator (default: ':')")
    p.add_argument("--depth", type=int, default=1, help="segments per prefix group (default: 1)")
    p.add_argument("--top", type=int, default=10, help="prefix groups shown (default: 10)")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")

    p = command(
        "export",
        t.cmd_export,
        "write keys as JSON Lines {key, value, ttl}",
        "Write keys as JSON Lines, one {key, value, ttl} object per line, streaming. "
        "With -o the file appears only once the export is complete.",
    )
    p.add_argument("url", metavar="URL")
    p.add_argument("--prefix", default="", help="only keys starting with this (literally)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    batch(p)

    p = command(
        "import",
        t.cmd_import,
        "load a JSON Lines export (TTLs restored)",
        "Load a JSON Lines export. The whole input is validated first, so a malformed "
        "line writes nothing; --no-validate streams in one pass instead.",
    )
    p.add_argument("url", metavar="URL")
    p.add_argument("file", metavar="FILE", nargs="?", help="the export (default: stdin)")
    p.add_argument(
        "--no-validate",
        action="store_true",
        help="one pass: a malformed line stops the import after earlier lines were written",
    )
    overwrite(p, "the storage")
    batch(p)

    p = command(
        "copy",
        t.cmd_copy,
        "copy keys from SRC_URL to DST_URL (TTLs preserved)",
        "Copy keys between storages, batched, TTLs preserved. Safe to rerun after an "
        "interruption: every key is written whole, so a rerun finishes the job.",
    )
    p.add_argument("src", metavar="SRC_URL")
    p.add_argument("dst", metavar="DST_URL")
    p.add_argument("--prefix", default="", help="only keys starting with this (literally)")
    overwrite(p, "DST_URL")
    batch(p)
    return parser


def _exit_code(error: BaseException) -> int:
    if isinstance(error, CliError):
        return error.exit_code
    if isinstance(error, KeyNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(error, MissingDependencyError):
        return EXIT_ERROR
    if isinstance(error, (ConfigurationError, InvalidKeyError, InvalidTTLError)):
        return EXIT_USAGE
    return EXIT_ERROR


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error argparse already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    debug = getattr(args, "debug", False)
    secrets = Secrets(process_environ({}))
    try:
        env_file = getattr(args, "env_file", None)
        if env_file is not None:
            secrets = Secrets(process_environ(load_env_file(env_file)))
        ctx = Context(secrets, quiet=getattr(args, "quiet", False))
        code: int = asyncio.run(args.func(ctx, args))
        return code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_PIPE
    except (CliError, StorageError, OSError) as e:
        _report(e, secrets, debug)
        return _exit_code(e)
    except Exception as e:  # a bug: still one line, with the way to get the details
        _report(e, secrets, debug, unexpected=True)
        return EXIT_ERROR


def _report(error: BaseException, secrets: Secrets, debug: bool, unexpected: bool = False) -> None:
    if debug:
        text = "".join(traceback.format_exception(error))
        print(secrets.scrub(text), file=sys.stderr, end="")
    message = str(error) or error.__class__.__name__
    if unexpected or isinstance(error, OSError):
        message = f"{error.__class__.__name__}: {message}"
    if unexpected and not debug:
        message += " (this looks like a bug; rerun with --debug for the traceback)"
    print(f"{PROG}: error: {secrets.scrub(_one_line(message))}", file=sys.stderr)


def _silence_stdout() -> None:
    # Python flushes stdout at exit and would complain about the closed pipe a second time.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
