"""Starting a throw-away PostgreSQL server for tests and benchmarks (a child cluster).

``PostgresServer.start()`` runs ``initdb`` into a fresh temporary folder (UTF-8, C locale,
trust authentication on loopback only), includes the project's settings
(``deploy/postgresql/canteen.conf``), and starts it with ``pg_ctl`` on a free port; ``stop()``
stops it and removes the folder. PostgreSQL refuses to run as root: as root, the cluster is
run as the ``postgres`` system user (the Debian package creates it).

Nothing here is needed by the default SQLite set-up; :func:`available` says whether the
PostgreSQL server binaries are installed (Debian: ``postgresql``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from shared.broker import free_port, wait_for_port

PROJECT_CONF = Path(__file__).resolve().parent.parent / "deploy" / "postgresql" / "canteen.conf"

# what tests may relax for speed (a crash of a test cluster loses nothing of value)
FAST_UNSAFE = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL server's bin folder, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name)
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def available() -> bool:
    return bin_dir() is not None


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, on 127.0.0.1:``port``."""

    def __init__(self, *, settings: dict[str, str] | None = None, port: int | None = None) -> None:
        found = bin_dir()
        if found is None:
            raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.bin = found
        self.port = port or free_port()
        self.settings = settings or {}
        self.workdir = Path(tempfile.mkdtemp(prefix="canteen-pg-"))
        self.data = self.workdir / "data"
        self.log = self.workdir / "server.log"
        self.user = "postgres"
        self.url = f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse root: run them as "postgres"
            pw = pwd.getpwnam("postgres")
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresServer:
        self._run(
            str(self.bin / "initdb"),
            "-D", str(self.data),
            "-U", self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        )  # fmt: skip
        conf = self.data / "postgresql.conf"
        extra = "".join(f"{k} = '{v}'\n" for k, v in self.settings.items())
        with open(conf, "a", encoding="utf-8") as f:
            f.write(f"\ninclude '{PROJECT_CONF}'\n")
            f.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n")
            f.write(f"unix_socket_directories = '{self.workdir}'\n{extra}")
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "start")
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"PostgreSQL did not start: {self.log_tail()}") from exc
        wait_for_port(self.port)
        return self

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        try:
            return int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def restart(self) -> None:
        """Stop fast (clients' connections are cut) and start again on the same port."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "restart")
        wait_for_port(self.port)

    def halt(self, mode: str = "fast") -> None:
        """Stop the server and keep its data: ``fast`` cuts the clients off and checkpoints,
        ``immediate`` quits at once (a crash: the next start recovers from the WAL)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def resume(self) -> None:
        """Start a halted server again: the same data folder, the same port."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "start")
        wait_for_port(self.port)

    @property
    def running(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # it runs as the "postgres" user
        return True

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.data.exists():
            try:
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
            except subprocess.CalledProcessError:
                pass  # not running (never started, or already stopped): the folder goes anyway
        shutil.rmtree(self.workdir, ignore_errors=True)
