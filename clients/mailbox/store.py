"""Mails kept as files (`<received-ns>-<random>.eml`) in one directory: the SMTP sink writes,
the web inbox reads, so the two need not share memory."""

from __future__ import annotations

import html
import re
import secrets
import time
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

NAME = re.compile(r"^\d{19}-[0-9a-f]{8}\.eml$")
LINK = re.compile(r"https?://[^\s<>\"']+")
MAX_MAILS = 500  # the oldest beyond this are removed: a sink, not an archive


@dataclass(frozen=True)
class Mail:
    id: str
    received: float
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", "(no subject)"))

    @property
    def to(self) -> str:
        return str(self.message.get("To", ""))

    @property
    def sender(self) -> str:
        return str(self.message.get("From", ""))

    def part(self, kind: str) -> str | None:
        body = self.message.get_body(preferencelist=(kind,))
        if body is None or body.get_content_subtype() != kind:
            return None
        return str(body.get_content())

    @property
    def text(self) -> str | None:
        return self.part("plain")

    @property
    def html(self) -> str | None:
        return self.part("html")

    def links(self) -> list[str]:
        found: list[str] = []
        for source in (self.text or "", html.unescape(self.html or "")):
            for link in LINK.findall(source):
                link = link.rstrip(".,;:)")
                if link not in found:
                    found.append(link)
        return found


class Store:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, raw: bytes) -> str:
        name = f"{time.time_ns():019d}-{secrets.token_hex(4)}.eml"
        tmp = self.directory / f".{name}"
        tmp.write_bytes(raw)
        tmp.rename(self.directory / name)  # readers never see half a mail
        for old in self._names()[MAX_MAILS:]:
            (self.directory / old).unlink(missing_ok=True)
        return name.removesuffix(".eml")

    def _names(self) -> list[str]:
        return sorted((p.name for p in self.directory.iterdir() if NAME.match(p.name)),
                      reverse=True)

    def _load(self, name: str) -> Mail:
        raw = (self.directory / name).read_bytes()
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        return Mail(name.removesuffix(".eml"), int(name[:19]) / 1e9, message)

    def all(self) -> list[Mail]:
        """Newest first."""
        mails = []
        for name in self._names():
            try:
                mails.append(self._load(name))
            except FileNotFoundError:  # removed meanwhile
                continue
        return mails

    def get(self, mail_id: str) -> Mail | None:
        name = f"{mail_id}.eml"
        if not NAME.match(name) or not (self.directory / name).is_file():
            return None
        return self._load(name)

    def clear(self) -> None:
        for name in self._names():
            (self.directory / name).unlink(missing_ok=True)
