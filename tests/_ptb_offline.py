"""An offline Bot API for python-telegram-bot tests: real Application, no network.

``RecordingRequest`` is PTB's HTTP layer answering with canned Bot API JSON and recording every
call; ``message()`` builds a real ``Update`` for a text (with a command entity for ``/...``).
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from telegram import Update
from telegram.ext import Application
from telegram.request import BaseRequest, RequestData

_update_ids = itertools.count(1)


class RecordingRequest(BaseRequest):
    """Answers Bot API calls with canned JSON and records them; never touches the network.

    Args:
        allowed: If given, any other endpoint fails the test (an example must not call it).
    """

    def __init__(self, allowed: frozenset[str] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.allowed = allowed
        self._ids = itertools.count(1000)

    @property
    def read_timeout(self) -> float | None:
        return 1.0

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[int, bytes]:
        endpoint = url.rsplit("/", 1)[1]
        if self.allowed is not None and endpoint not in self.allowed:
            raise AssertionError(f"unexpected Bot API call: {endpoint}")
        params = request_data.parameters if request_data is not None else {}
        self.calls.append((endpoint, params))
        result: Any = True
        if endpoint == "getMe":
            result = {"id": 123, "is_bot": True, "first_name": "Test", "username": "test_bot"}
        elif endpoint == "sendMessage":
            result = {
                "message_id": next(self._ids),
                "date": int(time.time()),
                "chat": {"id": params["chat_id"], "type": "private"},
                "text": params["text"],
            }
        return 200, json.dumps({"ok": True, "result": result}).encode()

    def texts(self) -> list[str]:
        """The texts of every message sent, in order."""
        return [str(p["text"]) for name, p in self.calls if name == "sendMessage"]


def message(
    app: Application[Any, Any, Any, Any, Any, Any], user_id: int, text: str, first_name: str = ""
) -> Update:
    """A private-chat text message from ``user_id``, as Telegram would deliver it."""
    n = next(_update_ids)
    data: dict[str, Any] = {
        "update_id": n,
        "message": {
            "message_id": n,
            "date": int(time.time()),
            "chat": {"id": user_id, "type": "private"},
            "from": {"id": user_id, "is_bot": False, "first_name": first_name or f"User{user_id}"},
            "text": text,
        },
    }
    if text.startswith("/"):
        command = text.split()[0]
        data["message"]["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    update = Update.de_json(data, app.bot)
    assert update is not None
    return update
