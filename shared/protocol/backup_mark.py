"""The server's backup mark for one terminal (server → terminal, retained, Ed25519-signed on
``canteen/v1/t/<terminal_id>/down/backup``).

* ``backed_up_seq`` — every sale of this terminal up to this seq is in a backup the server
  still keeps (the oldest one), so the terminal may delete those sales from its journal;
  0: none is. The terminal never prunes past it, whatever its own retention says.
* ``restore_epoch`` / ``restored_seq`` — set after the server's database was put back
  from a backup: ``restore_epoch`` names that restore, and the restored database held this
  terminal's sales up to ``restored_seq`` with none missing. Sales the terminal had
  acknowledged after that are gone from the server although the terminal's outbox no
  longer holds them; a terminal that sees an epoch for the first time puts every journaled
  sale above ``restored_seq`` back in its outbox and sends it again. The server's at-most-
  once key (terminal, seq) answers any it does hold with ``duplicate``; the rest are
  applied, once. ``""``/0: never restored (or this terminal was not in the restored
  database).

Old terminals do not subscribe to the topic, so the message changes nothing for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.protocol.codec import only_keys, req_int, req_str

_KEYS = frozenset({"terminal_id", "backed_up_seq", "backup_at_ms", "restore_epoch", "restored_seq"})


@dataclass(frozen=True)
class BackupMark:
    terminal_id: str
    backed_up_seq: int = 0
    backup_at_ms: int = 0
    restore_epoch: str = ""
    restored_seq: int = 0

    def to_body(self) -> dict[str, Any]:
        return {
            "terminal_id": self.terminal_id,
            "backed_up_seq": self.backed_up_seq,
            "backup_at_ms": self.backup_at_ms,
            "restore_epoch": self.restore_epoch,
            "restored_seq": self.restored_seq,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> BackupMark:
        only_keys(body, _KEYS, "body")
        return cls(
            terminal_id=req_str(body, "terminal_id", max_len=64),
            backed_up_seq=req_int(body, "backed_up_seq"),
            backup_at_ms=req_int(body, "backup_at_ms"),
            restore_epoch=req_str(body, "restore_epoch", max_len=64, allow_empty=True),
            restored_seq=req_int(body, "restored_seq"),
        )
