"""The terminal's update folder on disk, shared by the agent and the launcher.

Standard library only: the launcher (:mod:`terminal.launcher`) imports this module and
nothing else of the project, so no update can break the program that undoes updates.

::

    <update_root>/
      versions/<v>/            one folder per installed version: terminal/ hardware/ shared/,
                               manifest.json and manifest.sig (as signed by the release key)
      current -> versions/<v>  the version the launcher runs; absent: the installed base code
      downloads/               bundles as downloaded (<kind>-<v>.bundle)
      state/pending.json       a switch not yet confirmed: {version, previous, health_s, starts}
      state/last.json          what became of the last switch: confirmed / rolled_back
      state/blocked.json       versions that rolled back here: never installed again

The terminal's database (journal, outbox) and configuration live outside this folder, so
every version — and a rollback — reads the same unsent sales.

Every file here is written whole or not at all (a temporary file, fsync, rename, fsync of
the folder), and ``current`` is switched by renaming a new symlink over it, so a power cut
at any moment leaves either the old state or the new one. :func:`running_version` says which
version the code importing it belongs to: the ``manifest.json`` beside its packages (a
version folder), else the installed distribution's version.
"""

from __future__ import annotations

import compileall
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESTART_EXIT_CODE = 75  # the agent asks the launcher to start ``current`` again
LAUNCHER_ENV = "CANTEEN_TERMINAL_LAUNCHER"  # set by the launcher for the agent it runs
BASE = ""  # "version" of the installed code, when no ``current`` link exists
DISTRIBUTION = "canteen-one-card"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"


def running_version() -> str:
    """The version of this very code: from a version folder's manifest, else the package's."""
    manifest = Path(__file__).resolve().parent.parent / MANIFEST
    if manifest.is_file():
        try:
            return str(json.loads(manifest.read_text(encoding="utf-8"))["version"])
        except (ValueError, KeyError, OSError):
            pass
    # an import inside the function: only this fallback needs it
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0"


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, durably: a power cut leaves the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def versions(self) -> Path:
        return self.root / "versions"

    @property
    def current_link(self) -> Path:
        return self.root / "current"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def version_dir(self, version: str) -> Path:
        if not version or "/" in version or version.startswith("."):
            raise ValueError(f"version {version!r}")
        return self.versions / version

    # --- which version runs ----------------------------------------------------------------

    def current(self) -> str:
        """The version ``current`` points to, or :data:`BASE`."""
        try:
            target = os.readlink(self.current_link)
        except (FileNotFoundError, OSError):
            return BASE
        return Path(target).name

    def code_path(self, version: str) -> Path | None:
        """The folder to put first on the import path for ``version`` (None: the base code)."""
        return None if version == BASE else self.version_dir(version).resolve()

    def installed(self, version: str) -> bool:
        return version == BASE or (self.version_dir(version) / MANIFEST).is_file()

    def switch(self, version: str) -> None:
        """Point ``current`` at ``version`` (BASE: remove it), atomically and durably."""
        self.root.mkdir(parents=True, exist_ok=True)
        if version == BASE:
            try:
                os.unlink(self.current_link)
            except FileNotFoundError:
                pass
        else:
            if not self.installed(version):
                raise FileNotFoundError(f"version {version} is not installed")
            tmp = self.root / ".current.tmp"
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            os.symlink(Path("versions") / version, tmp)
            os.replace(tmp, self.current_link)
        fsync_dir(self.root)

    # --- installing ------------------------------------------------------------------------

    def install(self, version: str, files: Mapping[str, bytes], extra: Mapping[str, bytes]) -> Path:
        """Unpack a verified bundle's ``files`` (and ``extra`` files: its manifest and
        signature) into ``versions/<version>``: written beside it first, compiled to byte
        code (so the restart into it is quick), fsynced, then renamed into place, so a
        version folder that exists is complete."""
        final = self.version_dir(version)
        if final.exists():
            return final
        tmp = self.versions / f".{version}.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        for rel, data in {**files, **extra}.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        compileall.compile_dir(tmp, quiet=1, workers=1, stripdir=str(tmp), prependdir=str(final))
        for folder in sorted({p for p in tmp.rglob("*") if p.is_dir()} | {tmp}, reverse=True):
            fsync_dir(folder)
        os.replace(tmp, final)
        fsync_dir(self.versions)
        return final

    def read_installed(self, version: str, rel: str) -> bytes | None:
        try:
            return (self.version_dir(version) / rel).read_bytes()
        except OSError:
            return None

    def remove(self, version: str) -> None:
        """Delete an installed version (never the current one)."""
        if version != BASE and version != self.current():
            shutil.rmtree(self.version_dir(version), ignore_errors=True)

    # --- state files -----------------------------------------------------------------------

    def _read(self, name: str) -> Any:
        try:
            return json.loads((self.state / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            return None  # a torn file cannot exist (atomic writes); anything else: as absent

    def _write(self, name: str, value: Any) -> None:
        write_atomic(self.state / name, json.dumps(value, sort_keys=True).encode())

    def _delete(self, name: str) -> None:
        try:
            os.unlink(self.state / name)
        except FileNotFoundError:
            return
        fsync_dir(self.state)

    def pending(self) -> dict[str, Any] | None:
        value = self._read("pending.json")
        return value if isinstance(value, dict) and isinstance(value.get("version"), str) else None

    def set_pending(self, value: dict[str, Any]) -> None:
        self._write("pending.json", value)

    def clear_pending(self) -> None:
        self._delete("pending.json")

    def last(self) -> dict[str, Any] | None:
        value = self._read("last.json")
        return value if isinstance(value, dict) else None

    def set_last(self, value: dict[str, Any]) -> None:
        self._write("last.json", value)

    def blocked(self) -> set[str]:
        value = self._read("blocked.json")
        return {v for v in value if isinstance(v, str)} if isinstance(value, list) else set()

    def block(self, version: str) -> None:
        self._write("blocked.json", sorted(self.blocked() | {version}))

    # --- the two transitions ---------------------------------------------------------------

    def begin_switch(self, version: str, health_s: float, at_ms: int) -> None:
        """The agent, between sales: mark ``version`` pending, then point ``current`` at it."""
        self.set_pending(
            {
                "version": version,
                "previous": self.current(),
                "health_s": health_s,
                "at_ms": at_ms,
                "starts": 0,
            }
        )
        self.switch(version)

    def confirm(self, version: str, at_ms: int) -> bool:
        """The new version reached the server: it stays. False if it was not pending."""
        pending = self.pending()
        if pending is None or pending["version"] != version:
            return False
        self.set_last({"state": "confirmed", "version": version, "at_ms": at_ms})
        self.clear_pending()
        return True

    def roll_back(self, reason: str, at_ms: int) -> dict[str, Any] | None:
        """Undo the pending switch: the version is blocked and recorded first, then
        ``current`` points back, then the marker goes — each step safe to repeat after a
        power cut (:meth:`settle` finishes a rollback that was cut short)."""
        pending = self.pending()
        if pending is None:
            return None
        version, previous = pending["version"], str(pending.get("previous", BASE))
        self.block(version)
        last = self.last()
        if not (last and last.get("state") == "rolled_back" and last.get("version") == version):
            last = {
                "state": "rolled_back",
                "version": version,
                "previous": previous,
                "code": "update_rolled_back",
                "reason": reason,
                "at_ms": at_ms,
                "reported": False,
            }
            self.set_last(last)
        self.switch(previous if self.installed(previous) else BASE)
        self.clear_pending()
        return last

    def settle(self, at_ms: int) -> str:
        """Tidy up after a power cut; returns what was done ("" if nothing). A pending marker
        whose version ``current`` does not point to is a switch that never happened; one
        whose version is already blocked is a rollback cut short."""
        pending = self.pending()
        if pending is None:
            return ""
        if pending["version"] in self.blocked():
            self.roll_back("a rollback cut short by a power cut", at_ms)
            return "rollback_finished"
        if self.current() != pending["version"]:
            self.clear_pending()
            return "switch_abandoned"
        return ""
