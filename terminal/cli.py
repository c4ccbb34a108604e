"""``canteen-terminal``: run a terminal from its config file."""

from __future__ import annotations

import logging
import signal
import threading

import click

from hardware.devices import open_devices
from shared.clock import SystemClock
from terminal.agent import Terminal
from terminal.config import TerminalConfig
from terminal.devices import DeviceLoop


@click.group()
def main() -> None:
    """Canteen one-card terminal agent (食堂一卡通 消费终端)."""


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True), help="Terminal config JSON (from provision-terminal).")
def run(config_path: str) -> None:
    """Run the terminal: sync with the server and serve taps until stopped."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = TerminalConfig.load(config_path)
    devices = open_devices(config.display, config.camera, config.face_engine)
    terminal = Terminal(config, SystemClock(), display=devices.display).start()
    payments = DeviceLoop.from_config(terminal, config).start()  # card reader, QR scanner, e-CNY
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    payments.stop()
    terminal.stop()
    devices.close()
