"""What every event-producing device driver shares: a queue of events, and a thread that
opens the device, reads it, and reopens it after a failure — reporting, never raising.

:class:`EventQueue` is the read side (``read(timeout)`` / ``close()``) that simulated
devices use as they are; :class:`ReopeningDevice` adds the thread for real drivers. The
thread's cycle — open, set ``ready``, read, clear ``ready``, close, and on a failure report,
wait and start again — is written once here; a driver says how to open its device
(:meth:`~ReopeningDevice.open_device`), how to read it until it fails or ``stopping()``
(:meth:`~ReopeningDevice.read_device`) and which errors of its library mean "cannot open"
and "failed while reading" (``open_errors``, ``read_errors``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

log = logging.getLogger(__name__)

E = TypeVar("E")


class EventQueue(Generic[E]):
    def __init__(self) -> None:
        self._events: queue.Queue[E] = queue.Queue()

    def put(self, event: E) -> None:
        self._events.put(event)

    def read(self, timeout_s: float) -> E | None:
        """Block up to ``timeout_s`` for the next event; None if none came."""
        try:
            return self._events.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        return None


class ReopeningDevice(EventQueue[E]):
    """A device read on its own thread; a failure is reported and the device reopened after
    ``reopen_s``. ``ready`` is set while the device is open."""

    open_errors: ClassVar[tuple[type[Exception], ...]] = (OSError,)
    read_errors: ClassVar[tuple[type[Exception], ...]] = (OSError,)

    def __init__(
        self,
        name: str,
        *,
        on_error: Callable[[str], None] | None = None,
        reopen_s: float = 2.0,
    ) -> None:
        super().__init__()
        self.name = name
        self._on_error = on_error or (lambda _msg: None)
        self.reopen_s = reopen_s
        self._stop = threading.Event()
        self.last_error: str | None = None
        self.errors = 0
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def stopping(self) -> bool:
        return self._stop.is_set()

    def pause(self) -> None:
        """Wait before reopening (returns early when closing)."""
        self._stop.wait(self.reopen_s)

    def report(self, message: str) -> None:
        self.errors += 1
        self.last_error = message
        log.error("%s: %s", self.name, message)
        self._on_error(message)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._session()

    def _session(self) -> None:
        """One open device, from opening to closing; a failure is reported, then a pause."""
        try:
            handle = self.open_device()
        except self.open_errors as exc:  # no such device, busy, a bad device string
            self.report(f"cannot open: {exc}")
            self.pause()
            return
        self.last_error = None
        self.ready.set()
        try:
            self.read_device(handle)
        except self.read_errors as exc:  # unplugged, or the device broke while reading
            self.ready.clear()
            self.report(f"device failed: {exc}")
            self.pause()
        finally:
            self.ready.clear()
            handle.close()

    def open_device(self) -> Any:
        """The open device (anything with ``close()``); raises one of ``open_errors``."""
        raise NotImplementedError

    def read_device(self, handle: Any) -> None:
        """Read events from the open device and :meth:`put` them until :meth:`stopping` or
        a failure: one of ``read_errors`` raised, or :meth:`report` and :meth:`pause` and
        return."""
        raise NotImplementedError
