"""pyTelegramBotAPI (telebot) integration: state storages over any gramio-storage backend.

For ``AsyncTeleBot``::

    from telebot.async_telebot import AsyncTeleBot
    from gramio_storage.telebot import AsyncTeleBotStorage

    bot = AsyncTeleBot(TOKEN, state_storage=AsyncTeleBotStorage.from_url("sqlite:///bot.db"))

For the synchronous ``TeleBot`` (the async backend runs on a background event loop thread the
storage owns; see :class:`LoopThread`)::

    from telebot import TeleBot
    from gramio_storage.telebot import TeleBotStorage

    states = TeleBotStorage.from_url("redis://localhost:6379/0")
    bot = TeleBot(TOKEN, state_storage=states, use_class_middlewares=True)

Keys are telebot's own (``telebot:<bot id>:<business connection>:<thread>:<chat>:<user>``),
one JSON value ``{"state": ..., "data": {...}}`` each, written with atomic updates.

Install with ``pip install 'gramio-storage[telebot]'``.
"""

from ._async import AsyncStateData, AsyncTeleBotStorage, StateNotSetError, build_key
from ._sync import LoopThread, StateData, TeleBotStorage

__all__ = [
    "AsyncStateData",
    "AsyncTeleBotStorage",
    "LoopThread",
    "StateData",
    "StateNotSetError",
    "TeleBotStorage",
    "build_key",
]
