"""A real SMTP server (aiosmtpd) on 127.0.0.1 for the delivery tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from email.policy import default
from typing import Any

from aiosmtpd.controller import Controller


class Smtp:
    """An aiosmtpd handler: keeps what arrived; refuses recipients on demand."""

    def __init__(self) -> None:
        self.arrived: list[Any] = []
        self.replies: dict[str, list[str]] = {}  # address → replies to give, in order

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        queued = self.replies.get(address)
        if queued:
            return queued.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.arrived.append(message_from_bytes(envelope.original_content, policy=default))
        await asyncio.sleep(0)
        return "250 OK queued"


@contextmanager
def smtp_server() -> Iterator[tuple[Smtp, int]]:
    """(handler, port) of a server listening on 127.0.0.1 until the block ends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    handler = Smtp()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()
