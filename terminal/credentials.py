"""The terminal's own key, and the one before it after a rotation.

The key comes with the configuration (``secret_hex``, written 0600 by ``canteen-terminal
enrol``). When the server rotates it (:mod:`shared.protocol.rekey`), :meth:`Keyring.install`
makes the new key durable before it is used — first in the terminal's database (meta
``credentials``, fsynced with the journal's settings), then in the configuration file,
replaced atomically and readable by its owner only — and keeps the old key as *previous*:
acks the server signed before it saw the switch still verify, and the broker, until it is
reloaded with the new password, still knows the old one (:meth:`broker_password`
alternates after a refusal). A database that holds a newer key than the configuration file
(the file could not be rewritten) wins; one recorded for another terminal id is ignored.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from shared.private_files import write_private
from shared.protocol import broker_password
from shared.protocol.rekey import key_id
from terminal.config import TerminalConfig
from terminal.store import Store

log = logging.getLogger(__name__)

META_KEY = "credentials"


class Keyring:
    def __init__(self, config: TerminalConfig, store: Store, config_path: str | None = None) -> None:
        self.terminal_id = config.terminal_id
        self._store = store
        self._config_path = config_path
        self._lock = threading.Lock()
        self.current = config.secret
        self.previous: bytes | None = None
        saved = store.get_meta(META_KEY)
        if saved:
            data = json.loads(saved)
            if data.get("terminal_id") == config.terminal_id:
                self.current = bytes.fromhex(data["secret_hex"])
                prev = data.get("previous_secret_hex")
                self.previous = bytes.fromhex(prev) if prev else None

    @property
    def key_id(self) -> str:
        return key_id(self.current)

    def all(self) -> list[bytes]:
        """The keys a message from the server may be signed with: current, then previous."""
        with self._lock:
            return [self.current] + ([self.previous] if self.previous else [])

    def broker_password(self, refusals: int) -> str:
        """The broker password to try: the current key's, and after a refusal the previous
        key's in turn (the broker may not have been reloaded with the new one yet)."""
        keys = self.all()
        return broker_password(keys[refusals % len(keys)])

    def install(self, new: bytes) -> None:
        """Make ``new`` the current key, durably, keeping the current one as previous."""
        with self._lock:
            if new == self.current:
                return
            previous = self.current
            record = {
                "terminal_id": self.terminal_id,
                "secret_hex": new.hex(),
                "previous_secret_hex": previous.hex(),
            }
            self._store.set_metas({META_KEY: json.dumps(record)})
            self.current, self.previous = new, previous
        if self._config_path:
            try:
                _rewrite_secret(Path(self._config_path), new.hex())
            except OSError as exc:  # the database holds it; the next start reads it from there
                log.warning(
                    "%s: new key kept in the database; could not rewrite %s: %s",
                    self.terminal_id,
                    self._config_path,
                    exc,
                )


def _rewrite_secret(path: Path, secret_hex: str) -> None:
    """Replace the secret in the configuration file: a new 0600 file renamed over it."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data["secret_hex"] = secret_hex
    tmp = path.with_name(path.name + ".new")
    write_private(tmp, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
