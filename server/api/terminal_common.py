"""What the terminal-facing endpoints (``terminals`` and ``fleet``) share: a terminal-signed
request may concern only the terminal that signed it, and a terminal's configuration pins
the release key for signed updates, when one exists."""

from __future__ import annotations

from typing import Any

from flask import current_app, g

from server.registry import updates
from shared.errors import DomainError


def own_terminal(terminal_id: str, detail: str) -> None:
    """Refuse (``terminal_mismatch``, with ``detail``) a terminal-signed request about another
    terminal than the signer named in the path."""
    if g.principal.terminal_id != terminal_id:
        raise DomainError("terminal_mismatch", detail)


def with_release_key(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``release_public_key`` added when the server has a release key."""
    release = updates.release_public_key(current_app.config["RELEASE_PUBLIC_KEY_FILE"])
    if release:  # pinned for signed updates (terminal.updater)
        config["release_public_key"] = release
    return config
