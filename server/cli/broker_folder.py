"""The data folder of a broker the server configures (``mosquitto-config``, ``nats-config``)."""

from __future__ import annotations

import os
from typing import Any

from shared.errors import DomainError


def broker_data_folder(obj: Any, data_dir: str | None, default_name: str, label: str) -> str:
    """``data_dir`` made absolute and created (default: ``<data folder>/<default_name>``, after
    the command announces which data folder it uses); a folder that cannot be made is refused
    (``invalid_input``). ``label``: the broker's name in the Chinese message. ``obj``: the
    command's :class:`server.cli.root.Ctx` (not imported: root imports the commands)."""
    if data_dir is None:
        obj.announce()
        data_dir = os.path.join(obj.home, default_name)
    data_dir = os.path.abspath(data_dir)
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as exc:
        raise DomainError(
            "invalid_input",
            f"cannot create the broker data folder {data_dir}: {exc.strerror}",
            zh=f"无法创建 {label} 数据目录 {data_dir}",
        ) from exc
    return data_dir
