"""``canteen-terminal enrol``: from a one-time code to a configuration file on the Pi.

Everything that can be refused without the server is refused first — a code that cannot be
one (wrong length, a character outside the alphabet: a typo, and the code is not spent), an
address that is not https:// (``insecure_url``), a configuration file that already exists
(``config_exists``) — so the one-time code is spent only when the configuration can be
written. The server's answer (the terminal's id, canteen, secret, the server's public key,
the broker and server addresses) is checked like any configuration and written with
:func:`shared.private_files.write_private` (0600).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from shared.enrolment_code import canonical
from shared.errors import DomainError
from shared.private_files import write_private
from terminal.config import TerminalConfig, check_settings
from terminal.server_http import check_enrol_url, enrol

_FROM_SERVER = ("terminal_id", "canteen_id", "secret_hex", "server_public_key", "broker_url", "server_url")


def parse_settings(settings: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a value that reads as JSON (a number) is taken as such."""
    out: dict[str, Any] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DomainError("invalid_input", f"--set {item!r}: expected KEY=VALUE")
        if key in _FROM_SERVER:
            raise DomainError("invalid_input", f"--set {key}: comes from the server")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def enrol_terminal(
    server_url: str,
    typed_code: str,
    config_path: str | Path,
    *,
    ca_file: str = "",
    settings: tuple[str, ...] = (),
) -> TerminalConfig:
    """Redeem the code and write the configuration; returns it."""
    code = canonical(typed_code)
    if code is None:
        raise DomainError(
            "enrolment_code_invalid",
            "16 characters of 0-9 and A-Z (without I, L, O, U) expected; check for typos",
        )
    base = check_enrol_url(server_url)
    path = Path(config_path)
    if path.exists():
        raise DomainError("config_exists", f"{path}: remove it first (this terminal is enrolled already?)")
    extra = parse_settings(settings)
    if ca_file:
        if not os.path.isfile(ca_file):
            raise DomainError("invalid_input", f"--ca-file {ca_file}: no such file")
        extra["ca_file"] = os.path.abspath(ca_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(path.parent, os.W_OK):
        raise DomainError("invalid_input", f"{path.parent}: not writable")
    answer = enrol(base, code, ca_file=ca_file)
    data = {k: answer.get(k) for k in _FROM_SERVER}
    data["server_url"] = data["server_url"] or base
    if answer.get("release_public_key"):  # the pinned key of signed updates, when the server has one
        data["release_public_key"] = answer["release_public_key"]
    data.update(extra)
    problem = check_settings(data)
    if problem:
        raise DomainError("config_invalid", f"the server's answer: {problem}")
    write_private(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return TerminalConfig.from_dict(data)
