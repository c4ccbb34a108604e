"""The scale benchmarks' CPU accounting (bench/cpu_meter.py): a busy process is counted,
a sleeping one is not, its children count only when asked, and ``all`` is the sum."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from bench.cpu_meter import CpuMeter, cpu_seconds

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < 30: pass\n"


def test_busy_child_counted_under_its_parent_sleeping_process_not() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {BUSY!r}])"]
    )
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        meter = CpuMeter(
            {
                "tree": ([parent.pid], True),
                "parent_only": ([parent.pid], False),
                "sleeper": ([sleeper.pid], False),
                "gone": ([None], False),
            }
        ).start()
        start, deadline = cpu_seconds([parent.pid], with_children=True), time.monotonic() + 25
        while cpu_seconds([parent.pid], with_children=True) - start < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        # per item: two items, half the milliseconds; a part that ended reports its own seconds
        shares = meter.per_item_ms(2, reported={"ended": 1.0})
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()  # the busy grandchild would otherwise spin on for 30 s
        parent.kill()
        sleeper.kill()
        parent.wait()
        sleeper.wait()
    assert shares["tree"] >= 250  # the busy child's 0.5 s and more, over two items
    assert shares["parent_only"] < 100  # the parent itself only waits for its child
    assert shares["sleeper"] < 25
    assert shares["gone"] == 0
    assert shares["ended"] == 500
    assert shares["all"] == round(sum(v for k, v in shares.items() if k != "all"), 3)
