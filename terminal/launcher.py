"""``canteen-terminal-launcher``: run the current version of the terminal; undo a new one
that does not prove itself.

A small supervisor (systemd starts it, it starts the agent)::

    canteen-terminal-launcher --config /etc/canteen/t1.json [--events]

It runs ``python -P -m terminal.cli run --config FILE …`` with ``<update_root>/current``
first on the import path (no ``current``: the installed code), and starts it again whenever
it exits: at once after :data:`~terminal.update_layout.RESTART_EXIT_CODE` (the agent switched
``current`` to a new version between sales and asks to be started in it), after a growing
pause after anything else.

**Pending versions.** The agent marks a new version *pending* before it switches to it
(:meth:`~terminal.update_layout.Layout.begin_switch`); the new version removes the mark once
the server has acknowledged its report that it runs (``terminal.updater``). While the mark
stays, the launcher rolls back — ``current`` back to the previous version, the new one
blocked, the outcome recorded for the old version to report — when:

* the mark outlives its ``health_s`` (the new version did not reach the server in time);
* the pending version exits by itself other than to restart (it crashed);
* the pending version has been started :data:`MAX_PENDING_STARTS` times (power cuts in a loop).

The agent is asked to stop with SIGTERM (it finishes the sale in hand; sales are journaled
before the diner is told) and killed only if it has not stopped in :data:`STOP_GRACE_S`.
After a power cut, :meth:`~terminal.update_layout.Layout.settle` tidies a switch that never
happened or a rollback cut short. Standard library only, and of the project only
:mod:`terminal.update_layout`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from terminal.update_layout import BASE, LAUNCHER_ENV, RESTART_EXIT_CODE, Layout

log = logging.getLogger("canteen.launcher")

MAX_PENDING_STARTS = 3
STOP_GRACE_S = 20.0
POLL_S = 0.2
BACKOFF_MAX_S = 30.0


class Launcher:
    def __init__(
        self,
        layout: Layout | None,
        run_args: Sequence[str],
        *,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        events: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.layout = layout
        self.run_args = list(run_args)
        self.python = python
        self.env = dict(os.environ if env is None else env)
        self.events = events
        self._mono = monotonic
        self._sleep = sleep
        self._now_ms = now_ms
        self._stopping = False
        self.child: subprocess.Popen[bytes] | None = None
        self.rollbacks = 0

    # --- the loop ----------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM/SIGINT: stop the agent and leave."""
        self._stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        backoff = 1.0
        while not self._stopping:
            version, pending = self._choose()
            if version is None:
                continue  # rolled back: choose again
            started = self._mono()
            rc = self._supervise(version, pending)
            if rc is None or self._stopping:
                continue  # rolled back on its deadline, or stopping
            if rc == RESTART_EXIT_CODE:
                backoff = 1.0
                continue
            pending = self.layout.pending() if self.layout else None
            if pending is not None and pending["version"] == version:
                self._roll_back(f"version {version} exited with {rc} before it reached the server")
                continue
            ran = self._mono() - started
            backoff = 1.0 if ran > 60 else min(backoff * 2, BACKOFF_MAX_S)
            self._emit("exited", version=version, code=rc, restart_in_s=backoff)
            log.warning(
                "agent %s exited with %s; starting it again in %.0f s", version or "base", rc, backoff
            )
            self._wait(backoff)
        return 0

    def _choose(self) -> tuple[str | None, dict[str, Any] | None]:
        """The version to start now, and its pending mark if it has one (None: rolled back)."""
        if self.layout is None:
            return BASE, None
        done = self.layout.settle(self._now_ms())
        if done:
            self._emit("settled", done=done)
            log.warning("update folder tidied after a power cut: %s", done)
        pending = self.layout.pending()
        if pending is not None:
            pending["starts"] = int(pending.get("starts", 0)) + 1
            if pending["starts"] > MAX_PENDING_STARTS:
                self._roll_back(
                    f"version {pending['version']} started {MAX_PENDING_STARTS} times unconfirmed"
                )
                return None, None
            self.layout.set_pending(pending)
        return self.layout.current(), pending

    def _supervise(self, version: str, pending: dict[str, Any] | None) -> int | None:
        """Run ``version`` until it exits (its code) or its deadline passes (None)."""
        self.child = self._start(version)
        deadline = None if pending is None else self._mono() + float(pending.get("health_s", 600))
        while True:
            try:
                return self.child.wait(POLL_S)
            except subprocess.TimeoutExpired:
                pass
            if self._stopping:
                self._terminate()
                return self.child.returncode
            if deadline is not None and self._mono() > deadline:
                still = self.layout.pending() if self.layout else None
                if still is None or still["version"] != version:
                    deadline = None  # confirmed meanwhile
                    continue
                self._emit("deadline", version=version)
                self._terminate()
                self._roll_back(
                    f"version {version} did not reach the server within {still.get('health_s')} s"
                )
                return None

    def _start(self, version: str) -> subprocess.Popen[bytes]:
        env = dict(self.env)
        env[LAUNCHER_ENV] = str(os.getpid())
        code = self.layout.code_path(version) if self.layout else None
        if code is not None:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), env.get("PYTHONPATH", "")) if p)
        # -P: nothing from the working folder on the import path, only the chosen version
        argv = [self.python, "-P", "-m", "terminal.cli", "run", *self.run_args]
        self._emit("start", version=version or "base")
        log.info("starting the agent, version %s", version or "base")
        return subprocess.Popen(argv, env=env)

    def _terminate(self) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            log.error("agent did not stop in %.0f s: killed", STOP_GRACE_S)
            child.kill()
            child.wait()

    def _roll_back(self, reason: str) -> None:
        assert self.layout is not None
        last = self.layout.roll_back(reason, self._now_ms())
        if last is not None:
            self.rollbacks += 1
            self._emit("rollback", version=last["version"], to=last["previous"] or "base", reason=reason)
            log.error("rolled back from %s to %s: %s", last["version"], last["previous"] or "base", reason)

    def _wait(self, seconds: float) -> None:
        end = self._mono() + seconds
        while not self._stopping and self._mono() < end:
            self._sleep(min(POLL_S, end - self._mono()))

    def _emit(self, action: str, **fields: Any) -> None:
        """With ``--events``: one JSON line on stdout, beside the agent's own (one write each,
        shorter than a pipe's atomic size, so lines never interleave)."""
        if self.events:
            line = json.dumps({"event": "launcher", "action": action, **fields}, ensure_ascii=False)
            os.write(sys.stdout.fileno(), (line + "\n").encode())


def layout_from_config(config_path: Path) -> Layout | None:
    """The update folder named by the terminal configuration's ``update_root`` (relative:
    from the configuration's folder); None when updates are not set up."""
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"配置文件有误 / the configuration file is invalid: {config_path}: {exc}") from exc
    root = data.get("update_root") if isinstance(data, dict) else None
    if not isinstance(root, str) or not root:
        return None
    path = Path(root).expanduser()
    return Layout(path if path.is_absolute() else config_path.resolve().parent / path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="canteen-terminal-launcher",
        description="Run the current version of the terminal agent; roll back an update that "
        "does not reach the server (食堂一卡通 终端启动器). Other options go to `canteen-terminal run`.",
    )
    parser.add_argument(
        "--config",
        default=os.environ.get("CANTEEN_TERMINAL_CONFIG"),
        help="Terminal config JSON; default $CANTEEN_TERMINAL_CONFIG.",
    )
    args, rest = parser.parse_known_args(argv)
    if not args.config:
        parser.error("--config (or CANTEEN_TERMINAL_CONFIG) is required")
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    config = Path(args.config).resolve()
    launcher = Launcher(
        layout_from_config(config), ["--config", str(config), *rest], events="--events" in rest
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: launcher.stop())
    return launcher.run()


if __name__ == "__main__":
    sys.exit(main())
