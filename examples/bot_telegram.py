"""The demo bot on python-telegram-bot + gramio-storage, for a real token (long polling).

The same bot as ``examples/bot_demo.py`` (aiogram): a ``/count`` counter, a two-step ``/register``
form and a ``/profile``. Here PTB keeps them: the counter and profile in ``user_data``, the form's
step in a persistent ``ConversationHandler``, and :class:`StoragePersistence` stores both in any
gramio-storage backend, as JSON (``ptb:user:<id>``, ``ptb:conv:registration:[<chat>,<user>]``)::

    python examples/bot_telegram.py --token 123456:ABC...        # or TELEGRAM_BOT_TOKEN=...
    python examples/bot_telegram.py --storage redis://127.0.0.1:6379/0

Stop it in the middle of the form and start it again: the bot still waits for your answer.
Default storage: the demo's SQLite file (``$GRAMIO_DEMO_STORAGE`` overrides it); PTB's keys live
under ``ptb:``, apart from the aiogram demo's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from telegram import Message, Update
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    MessageHandler,
    filters,
)

from gramio_storage import BaseStorage, storage_from_url
from gramio_storage.telegram import StoragePersistence

DEFAULT_STORAGE = "sqlite:///" + str(Path(tempfile.gettempdir()) / "gramio-demo.db")
NAME, AGE = range(2)  # the form's steps: ConversationHandler states, persisted by the storage

App = Application[Any, Any, Any, Any, Any, Any]
Context = ContextTypes.DEFAULT_TYPE


def parts(update: Update, context: Context) -> tuple[Message, dict[str, Any]]:
    """The message and the sender's ``user_data`` (every update these handlers get has both)."""
    assert update.message is not None and context.user_data is not None
    return update.message, context.user_data


# ---------------------------------------------------------------------------------- the bot


async def start(update: Update, context: Context) -> None:
    message, user = parts(update, context)
    if profile := user.get("profile"):
        await message.reply_text(f"Welcome back, {profile['name']} ({profile['age']})!")
    elif form := user.get("form"):
        await message.reply_text(
            f"Welcome back, {form['name']}! You were about to tell me your age."
        )
    else:
        await message.reply_text("Hi! I count your /count presses and remember a /register form.")


async def count(update: Update, context: Context) -> None:
    message, user = parts(update, context)
    n = user["count"] = user.get("count", 0) + 1  # PTB hands the change to the persistence
    await message.reply_text(f"You pressed /count {n} time{'s' if n != 1 else ''}.")


async def register(update: Update, context: Context) -> int:
    message, _ = parts(update, context)
    await message.reply_text("What is your name?")
    return NAME


async def got_name(update: Update, context: Context) -> int:
    message, user = parts(update, context)
    user["form"] = {"name": message.text}
    await message.reply_text(f"How old are you, {message.text}?")
    return AGE


async def got_age(update: Update, context: Context) -> int | None:
    message, user = parts(update, context)
    if not (message.text or "").isdigit():
        await message.reply_text("Please send your age as a number.")
        return None  # stay in AGE: the next message is the next try
    name = user.pop("form")["name"]
    user["profile"] = {"name": name, "age": int(message.text or 0)}
    await message.reply_text(f"Nice to meet you, {name} ({message.text})!")
    return ConversationHandler.END


async def profile(update: Update, context: Context) -> None:
    message, user = parts(update, context)
    p = user.get("profile")
    who = f"{p['name']}, {p['age']}" if p else "not registered yet (/register)"
    await message.reply_text(f"Profile: {who}. /count pressed {user.get('count', 0)} times.")


def build_application(
    builder: ApplicationBuilder[Any, Any, Any, Any, Any, Any], storage: BaseStorage
) -> App:
    """The whole integration: PTB's persistence in a gramio-storage backend, then the handlers.

    Args:
        builder: ``Application.builder().token(...)`` (plus any options of yours).
        storage: The backend; closed when the application stops polling.
    """

    async def close_storage(_: App) -> None:
        await storage.close()  # after PTB's final flush at shutdown

    app = builder.persistence(StoragePersistence(storage)).post_shutdown(close_storage).build()
    text = filters.TEXT & ~filters.COMMAND
    app.add_handler(
        ConversationHandler(
            entry_points=[CommandHandler("register", register)],
            states={NAME: [MessageHandler(text, got_name)], AGE: [MessageHandler(text, got_age)]},
            fallbacks=[],
            name="registration",  # a persistent conversation needs a name: it is in its keys
            persistent=True,
        )
    )
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CommandHandler("count", count))
    app.add_handler(CommandHandler("profile", profile))
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--storage",
        default=os.environ.get("GRAMIO_DEMO_STORAGE", DEFAULT_STORAGE),
        help="storage URL (default: $GRAMIO_DEMO_STORAGE or the demo's SQLite file)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("TELEGRAM_BOT_TOKEN"),
        help="bot token from @BotFather (default: $TELEGRAM_BOT_TOKEN)",
    )
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("a bot token is needed: --token 123456:ABC... or TELEGRAM_BOT_TOKEN")
    storage = storage_from_url(args.storage)
    app = build_application(Application.builder().token(args.token), storage)
    print(f"polling with {storage!r}; Ctrl+C to stop")  # the repr never shows a password
    app.run_polling()


if __name__ == "__main__":
    main()
