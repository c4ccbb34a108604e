"""The server's public address (``PUBLIC_URL``): where phones and browsers reach it, for the
links it hands out (the QR phone page). Set with ``CANTEEN_PUBLIC_URL``, in
``$CANTEEN_HOME/server/config.py`` or by ``canteen-server init --public-url``; there is no
default, because a link to localhost works on no phone.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from shared.errors import DomainError

_LINE = re.compile(r"^PUBLIC_URL\s*=.*$", re.MULTILINE)


def check(url: str) -> str:
    """``url`` without a trailing slash; DomainError when it is missing or not http(s)://host."""
    url = url.strip()
    if not url:
        raise DomainError(
            "public_url_missing",
            "give --base-url https://…, or set it once: canteen-server init --public-url https://… "
            "(or CANTEEN_PUBLIC_URL, or PUBLIC_URL in $CANTEEN_HOME/server/config.py)",
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise DomainError("invalid_input", f"public URL {url!r}: expected http(s)://host[:port][/path]")
    return url.rstrip("/")


def save(config_file: str | Path, url: str) -> str:
    """Write ``PUBLIC_URL`` into the server's config.py (replacing an earlier setting); the
    checked URL is returned."""
    url = check(url)
    path = Path(config_file)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    line = f"PUBLIC_URL = {url!r}  # canteen-server init --public-url"
    if _LINE.search(text):
        text = _LINE.sub(lambda _: line, text)
    else:
        text += ("" if not text or text.endswith("\n") else "\n") + line + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return url
