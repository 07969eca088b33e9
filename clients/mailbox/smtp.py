"""The SMTP side: accepts any mail for any recipient and keeps it in the store."""

from __future__ import annotations

from typing import Any

from aiosmtpd.controller import Controller

from clients.mailbox.store import Store

MAX_SIZE = 5 * 1024 * 1024


class Sink:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.store.add(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


def start(store: Store, host: str, port: int) -> Controller:
    controller = Controller(Sink(store), hostname=host, port=port, data_size_limit=MAX_SIZE)
    controller.start()
    return controller
