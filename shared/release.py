"""Signed update bundles: what a release is, how it is sealed and how it is checked.

A bundle is a tar archive of three kinds of member::

    manifest.json   canonical JSON: format, kind, version, min_version, created_at_ms,
                    files {relative path: sha256 hex}
    manifest.sig    "ed25519:<hex>", the release key's signature over manifest.json's bytes
    files/<path>    every file the manifest names, and nothing else

``kind`` is ``terminal`` (the ``terminal/``, ``hardware/`` and ``shared/`` packages the Pi
runs) or ``firmware`` (the peripheral board's ``board/`` package). The release key is an
Ed25519 key of its own, kept apart from the server's key: the terminal pins its public half
in its configuration, so not even the server can make a terminal run code the release key
did not sign. Signing and checking reuse the protocol's Ed25519 helpers
(:class:`shared.protocol.signing.ServerKey` / :class:`~shared.protocol.signing.ServerVerifier`).

:func:`open_bundle` refuses, each with a stable code (``shared.errors``): a bundle that is
not one (``update_malformed``), a signature the pinned key did not make
(``update_bad_signature``), a file whose bytes do not hash to the manifest's value, a file
missing or one the manifest does not name (``update_corrupted``). :func:`check_offer` then
refuses a version that is not newer than the running one (``update_downgrade``), a running
version older than the bundle's ``min_version`` (``update_too_old``) and a bundle of the
wrong kind. Pure: bytes in, records out (the tar is read from memory).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.errors import DomainError
from shared.protocol.codec import canonical_json
from shared.protocol.signing import ServerKey, ServerVerifier

BUNDLE_FORMAT = 1
# the top-level folders a bundle of each kind carries (paths in its manifest start with one)
KIND_ROOTS: Mapping[str, tuple[str, ...]] = {
    "terminal": ("terminal", "hardware", "shared"),
    "firmware": ("board",),
}
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
FILES_PREFIX = "files/"
MAX_BUNDLE_BYTES = 64 * 1_048_576
MAX_FILES = 5_000
_VERSION = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6}){0,3}")
_PATH_PART = re.compile(r"[A-Za-z0-9_.\-]{1,100}")

ReleaseKey = ServerKey  # an Ed25519 signing key; the release key is a separate one
ReleaseVerifier = ServerVerifier


def parse_version(text: str) -> tuple[int, ...]:
    """``"1.2.3"`` → ``(1, 2, 3)``: one to four dot-separated numbers."""
    if not isinstance(text, str) or not _VERSION.fullmatch(text):
        raise DomainError("update_malformed", f"version {text!r}: one to four numbers separated by dots")
    return tuple(int(p) for p in text.split("."))


def version_key(text: str) -> tuple[int, ...]:
    """A version as a key that compares as versions do (``1.10`` after ``1.9``, ``1.0`` = ``1``)."""
    parts = list(parse_version(text))
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def is_newer(candidate: str, running: str) -> bool:
    return version_key(candidate) > version_key(running)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_path(path: str, kind: str) -> str:
    """A manifest path: relative, forward slashes, plain names, under the kind's folders."""
    parts = path.split("/") if isinstance(path, str) else []
    if (
        not parts
        or len(path) > 300
        or any(not _PATH_PART.fullmatch(p) or p in (".", "..") for p in parts)
        or parts[0] not in KIND_ROOTS.get(kind, ())
        or len(parts) < 2
    ):
        raise DomainError("update_malformed", f"file path {path!r} not allowed in a {kind} bundle")
    return path


@dataclass(frozen=True)
class Manifest:
    kind: str
    version: str
    min_version: str
    created_at_ms: int
    files: dict[str, str] = field(default_factory=dict)  # path → sha256 hex

    def to_json(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "kind": self.kind,
            "version": self.version,
            "min_version": self.min_version,
            "created_at_ms": self.created_at_ms,
            "files": dict(sorted(self.files.items())),
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise DomainError("update_malformed", "manifest.json is not JSON") from exc
        if not isinstance(raw, dict) or set(raw) != {
            "format",
            "kind",
            "version",
            "min_version",
            "created_at_ms",
            "files",
        }:
            raise DomainError("update_malformed", "manifest.json: unexpected fields")
        if raw["format"] != BUNDLE_FORMAT:
            raise DomainError("update_malformed", f"manifest format {raw['format']!r} not understood")
        kind = raw["kind"]
        if kind not in KIND_ROOTS:
            raise DomainError("update_malformed", f"kind {kind!r}")
        parse_version(raw["version"])
        parse_version(raw["min_version"])
        created, files = raw["created_at_ms"], raw["files"]
        if type(created) is not int or not isinstance(files, dict) or not 0 < len(files) <= MAX_FILES:
            raise DomainError("update_malformed", "manifest.json: created_at_ms or files")
        for path, digest in files.items():
            check_path(path, kind)
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise DomainError("update_malformed", f"{path}: sha256 must be 64 lower-case hex digits")
        return cls(kind, raw["version"], raw["min_version"], created, dict(files))


@dataclass(frozen=True)
class Bundle:
    """A bundle whose signature and every file hash were checked."""

    manifest: Manifest
    manifest_bytes: bytes  # exactly as signed
    signature: str
    files: dict[str, bytes]

    @property
    def version(self) -> str:
        return self.manifest.version


def build_bundle(
    kind: str,
    version: str,
    files: Mapping[str, bytes],
    key: ServerKey,
    created_at_ms: int,
    min_version: str = "0",
) -> bytes:
    """The signed bundle (tar bytes) of ``files`` (path → content)."""
    if kind not in KIND_ROOTS:
        raise DomainError("update_malformed", f"kind {kind!r}")
    parse_version(version)
    parse_version(min_version)
    if not files:
        raise DomainError("update_malformed", "a bundle needs at least one file")
    manifest = Manifest(
        kind,
        version,
        min_version,
        created_at_ms,
        {check_path(p, kind): sha256_hex(data) for p, data in files.items()},
    )
    manifest_bytes = manifest.to_bytes()
    members = [
        (MANIFEST_NAME, manifest_bytes),
        (SIGNATURE_NAME, key.sign(manifest_bytes).encode()),
        *((FILES_PREFIX + p, files[p]) for p in sorted(files)),
    ]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, created_at_ms // 1000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def read_members(data: bytes) -> dict[str, bytes]:
    """The regular files of a bundle's tar, by name; anything else (a link, a device, a
    path that climbs out, a name twice) is refused as ``update_malformed``."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise DomainError("update_malformed", f"bundle larger than {MAX_BUNDLE_BYTES} bytes")
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in tar:
                if not info.isreg():
                    raise DomainError("update_malformed", f"{info.name!r} is not a regular file")
                if info.name in members or len(members) > MAX_FILES + 2:
                    raise DomainError("update_malformed", f"{info.name!r} twice, or too many files")
                f = tar.extractfile(info)
                members[info.name] = f.read() if f is not None else b""
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DomainError("update_malformed", f"not a bundle (tar): {exc}") from exc
    return members


def open_bundle(data: bytes, release_public_key: str) -> Bundle:
    """Check a bundle against the pinned release key: its signature, then every file."""
    members = read_members(data)
    manifest_bytes, sig = members.pop(MANIFEST_NAME, None), members.pop(SIGNATURE_NAME, None)
    if manifest_bytes is None or sig is None:
        raise DomainError("update_malformed", "manifest.json or manifest.sig missing")
    try:
        verifier = ServerVerifier(release_public_key)
    except ValueError as exc:
        raise DomainError("update_not_configured", "the pinned release key is not a public key") from exc
    if not verifier.verify(manifest_bytes, sig.decode("ascii", "replace").strip()):
        raise DomainError("update_bad_signature", "manifest.sig was not made by the pinned release key")
    manifest = Manifest.from_bytes(manifest_bytes)
    files = {}
    for name, content in members.items():
        if not name.startswith(FILES_PREFIX):
            raise DomainError("update_corrupted", f"{name!r}: not named by the manifest")
        path = name[len(FILES_PREFIX) :]
        expected = manifest.files.get(path)
        if expected is None:
            raise DomainError("update_corrupted", f"{path}: not named by the manifest")
        if sha256_hex(content) != expected:
            raise DomainError("update_corrupted", f"{path}: sha256 does not match the manifest")
        files[path] = content
    missing = sorted(set(manifest.files) - set(files))
    if missing:
        raise DomainError("update_corrupted", f"{len(missing)} file(s) missing, first {missing[0]}")
    return Bundle(manifest, manifest_bytes, sig.decode("ascii").strip(), files)


def check_offer(manifest: Manifest, kind: str, running_version: str) -> None:
    """May this bundle replace ``running_version``? Newer only, and only from ``min_version`` on."""
    if manifest.kind != kind:
        raise DomainError("update_malformed", f"a {manifest.kind} bundle offered as {kind}")
    if not is_newer(manifest.version, running_version):
        raise DomainError(
            "update_downgrade", f"version {manifest.version} is not newer than {running_version}"
        )
    if version_key(running_version) < version_key(manifest.min_version):
        raise DomainError(
            "update_too_old",
            f"version {manifest.version} replaces {manifest.min_version} or newer; running {running_version}",
        )


def verify_tree(manifest: Manifest, read: Any) -> None:
    """Every file of an installed tree hashes to the manifest's value. ``read(path)`` gives a
    file's bytes (None if missing); a difference is ``update_corrupted``."""
    for path, expected in sorted(manifest.files.items()):
        content = read(path)
        if content is None or sha256_hex(content) != expected:
            raise DomainError("update_corrupted", f"{path}: missing or changed on disk")
