"""The README's "Running it for real" walkthrough, run as written (issue 12).

The commands come from README.md itself — every ``sh`` block of the section, in order, with
line continuations joined and comments dropped — so a command removed or changed there changes
what runs here. A test needs a few things the README cannot say (a temporary data folder, free
ports, no TLS certificates): they are the one table ``substitutions`` below, and each entry
must still match something in the README (a stale entry fails the test). The clerks' input
files (信息统计表.csv, 名单.csv) are written first, in the format the README describes.

Long-running commands (Mosquitto, ``canteen-server run``, ``canteen-terminal run``) start in
the background and are stopped at the end, also on failure; ``kill -HUP $(pidof mosquitto)``
signals this test's own Mosquitto. Taps in the README's tap-line format are typed into the
running terminal. Every command's exit code is checked, and the results at the end: the unit,
canteen and holders exist, the allocation and top-up moved money, the taps reached the
server, the terminal is online with nothing unsent, the ledger checks out. The transcript of
every command is printed (pytest shows it when the test fails).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared.broker import MosquittoBroker, mosquitto_binary
from simulator.waiting import wait_until
from tests.process_support import ROOT, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.broker,
    pytest.mark.skipif(not MosquittoBroker.available(), reason="needs the mosquitto binary"),
]

README = ROOT / "README.md"
SECTION = "## Running it for real"
BIN = Path(sys.executable).parent  # the venv's console scripts, in any checkout
CONSOLE_SCRIPTS = ("canteen-server", "canteen-terminal")
TIMEOUT_S = 60.0  # generous: 2 cores shared with other test runs
SHANGHAI = ZoneInfo("Asia/Shanghai")

# README lines the test does not run, and why
SKIPPED = {
    "make install": "the test runs inside the installed virtualenv already",
    ". .venv/bin/activate": "the console scripts are taken from this interpreter's bin folder",
}

# the clerks' files the README names, in the format it describes: the seed's attachment table
# (one 餐位标准 column with 早/中/晚) and the roster (单位名称, 姓名, 工号, 卡号[, 银行卡号]); only
# the unit the walkthrough adds (市财政局), since an import is all-or-nothing
INPUT_FILES = {
    "信息统计表.csv": (
        "单位名称,食堂数量,食堂位置,食堂面积（平方米）,餐位数量,餐位标准（早餐/中餐/晚餐）\n"
        "市财政局,1,市财经大楼1楼,350,200,5/12/10\n"
    ),
    "名单.csv": (
        "单位名称,姓名,工号,卡号,银行卡号\n市财政局,王伟,CZ001,04A1B2C3D4,6222020000000001\n市财政局,李娜,CZ002,04A1B2C3D5,\n"
    ),
}

# the README's example enrolment code: replaced by the one provision-terminal printed
EXAMPLE_CODE = "7KQM-2XPA-9D4T-HW3R"
CODE = re.compile(r"\b[0-9A-Z]{4}(?:-[0-9A-Z]{4}){3}\b")

# placeholders in the README's "also:" lists of further subcommands (and D: today)
PLACEHOLDERS = {"QUARTER": "2026Q1", "YEAR": "2026"}


def today() -> str:
    return datetime.now(SHANGHAI).date().isoformat()


def substitutions(home: Path, etc: Path, mqtt_port: int, http_port: int) -> list[tuple[str, str]]:
    """The one table of what the test changes in the README's commands, applied in order."""
    return [
        ("/var/lib/canteen", str(home)),
        # TLS is exercised by the render tests only (tests/test_broker_security.py): no
        # certificates here, so the listener is plain and local, and terminals use mqtt://
        (" --cafile ca.crt --certfile broker.crt --keyfile broker.key", ""),
        ("--listen 0.0.0.0 --port 8883", f"--listen 127.0.0.1 --port {mqtt_port}"),
        ("mqtts://broker:8883", f"mqtt://127.0.0.1:{mqtt_port}"),
        ("--host 0.0.0.0 --port 8080", f"--host 127.0.0.1 --port {http_port}"),
        ("https://server", f"http://127.0.0.1:{http_port}"),
        ("/etc/canteen/", f"{etc}/"),
        ("2026-11-26", today()),  # the totals example's date: today's, where the taps are
    ]


# --- reading the README ------------------------------------------------------------------


def section_text() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end >= 0 else len(text)]


def readme_lines(section: str) -> list[tuple[str, str]]:
    """(command, comment) per command of the section's ``sh`` blocks; a comment-only line
    is appended to the comment before it."""
    out: list[tuple[str, str]] = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        for raw in joined.splitlines():
            command, _, comment = raw.partition("#")
            command, comment = command.strip(), comment.strip()
            if command:
                out.append((command, comment))
            elif comment and out:
                out[-1] = (out[-1][0], f"{out[-1][1]} {comment}")
    return out


def expand_words(words: list[str]) -> list[list[str]]:
    """``a|b|c`` words expanded into one command each."""
    results: list[list[str]] = [[]]
    for word in words:
        options = word.split("|") if "|" in word else [word]
        results = [r + [o] for r in results for o in options]
    return results


def also_commands(lines: list[tuple[str, str]]) -> list[list[str]]:
    """The README's "also: ..." comment (continued while it ends with a comma) lists further
    subcommands of the same command: one command each, alternatives expanded."""
    extra: list[list[str]] = []
    for i, (command, comment) in enumerate(lines):
        if "also:" not in comment:
            continue
        text = comment.split("also:", 1)[1].strip()
        j = i
        while text.endswith(",") and j + 1 < len(lines):
            j += 1
            text = f"{text} {lines[j][1].strip()}"
        prefix = command.split()[:2]
        for item in (p.strip() for p in text.rstrip(",").split(",")):
            words = [{**PLACEHOLDERS, "D": today()}.get(w, w) for w in unbracket(item).split()]
            extra += [prefix + e for e in expand_words(words)]
    return extra


def unbracket(command: str) -> str:
    """``[--json]``-style optional parts: taken, without their brackets."""
    return re.sub(r"\[([^\[\]]*)\]", r"\1", command)


def tap_examples(section: str) -> list[str]:
    """The example column of the tap-line table's shop rows (a meal depends on the hour)."""
    return re.findall(r"^\| `<card> shop [^`]*` \| `([^`]*)` \|", section, flags=re.M)


# --- running it ------------------------------------------------------------------------


@dataclass
class Result:
    argv: list[str]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:  # noqa: ANN401 — whatever the command printed
        return json.loads(self.stdout)


@dataclass
class Walk:
    cwd: Path
    env: dict[str, str]
    transcript: list[str] = field(default_factory=list)
    background: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def log(self, line: str) -> None:
        self.transcript.append(line)
        print(line)

    def argv(self, words: list[str]) -> list[str]:
        if words[0] in CONSOLE_SCRIPTS:
            return [str(BIN / words[0]), *words[1:]]
        if words[0] == "mosquitto":
            return [str(mosquitto_binary()), *words[1:]]
        return words

    def run(self, words: list[str], stdout_to: Path | None = None) -> Result:
        argv = self.argv(words)
        self.log(f"$ {shlex.join(words)}" + (f" > {stdout_to.name}" if stdout_to else ""))
        proc = subprocess.run(argv, cwd=self.cwd, env=self.env, capture_output=True, timeout=TIMEOUT_S * 2)
        out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        if stdout_to is not None:
            stdout_to.write_text(out, encoding="utf-8")
        for text in (out if stdout_to is None else "", err):
            for line in text.splitlines()[:40]:
                self.log(f"    {line}")
        self.log(f"    [exit {proc.returncode}]")
        return Result(words, proc.returncode, out, err)

    def start(self, name: str, words: list[str], stdin: bool = False) -> subprocess.Popen[bytes]:
        self.log(f"$ {shlex.join(words)} &")
        path = self.cwd / f"{name}.log"
        with path.open("wb") as log:
            proc = subprocess.Popen(
                self.argv(words),
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.background[name], self.logs[name] = proc, path
        return proc

    def output(self, name: str) -> str:
        return self.logs[name].read_text(encoding="utf-8", errors="replace")

    def stop_all(self) -> None:
        for name, proc in reversed(list(self.background.items())):
            if proc.stdin is not None:
                proc.stdin.close()
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
            self.log(f"--- {name} (exit {proc.returncode}), last lines:")
            for line in self.output(name).splitlines()[-25:]:
                self.log(f"    {line}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_up(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def yuan_to_fen(text: str) -> int:
    whole, _, frac = text.partition(".")
    return int(whole) * 100 + int((frac + "00")[:2])


# --- the test ----------------------------------------------------------------------------


@pytest.fixture
def walk(tmp_path: Path) -> Iterator[Walk]:
    cwd = tmp_path / "walk"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANTEEN_")}
    env["PYTHONPATH"] = str(ROOT)
    w = Walk(cwd, env)
    try:
        yield w
    finally:
        w.stop_all()


def test_readme_walkthrough_runs_as_written(walk: Walk, tmp_path: Path) -> None:
    mqtt_port, http_port = free_port(), free_port()
    table = substitutions(tmp_path / "var-lib-canteen", tmp_path / "etc-canteen", mqtt_port, http_port)
    section = section_text()
    lines = readme_lines(section)
    assert lines, f"no sh blocks under {SECTION!r} in README.md"
    for name, text in INPUT_FILES.items():
        (walk.cwd / name).write_text(text, encoding="utf-8")

    used: set[str] = set()
    skipped: set[str] = set()
    also = also_commands(lines)
    seen: set[tuple[str, ...]] = set()
    facts: dict[str, Any] = {}  # what the README's commands said, for the checks
    ran: list[str] = []

    def substitute(command: str) -> str:
        for old, new in table:
            if old in command:
                used.add(old)
                command = command.replace(old, new)
        return unbracket(command)

    def execute(command: str) -> None:
        """One README command (after substitution): a built-in, a background process or a run."""
        if command.startswith("export "):
            name, _, value = command.removeprefix("export ").partition("=")
            walk.log(f"$ {command}")
            walk.env[name] = value
            return
        if command == "kill -HUP $(pidof mosquitto)":
            walk.log(f"$ {command}   # this test's Mosquitto, pid {walk.background['mosquitto'].pid}")
            os.kill(walk.background["mosquitto"].pid, signal.SIGHUP)
            return
        if EXAMPLE_CODE in command:  # the code this run's provision-terminal printed
            command = command.replace(EXAMPLE_CODE, facts["enrol_code"])
        words, redirect = shlex.split(command), None
        if ">" in words:
            redirect = walk.cwd / words[words.index(">") + 1]
            words = words[: words.index(">")]
        key = tuple(words)
        if key in seen:
            return
        seen.add(key)
        ran.append(shlex.join(words))
        if words[:1] == ["mosquitto"]:
            start_mosquitto(words)
        elif words[:2] == ["canteen-server", "run"]:
            walk.start("server", words)
            assert wait_until(lambda: http_up(http_port), TIMEOUT_S), "canteen-server run never answered HTTP"
        elif words[:2] == ["canteen-terminal", "run"]:
            run_terminal(words)
        else:
            check_exit(walk.run(words, stdout_to=redirect))

    def start_mosquitto(words: list[str]) -> None:
        conf = walk.cwd / words[words.index("-c") + 1]
        if os.geteuid() == 0:
            # run as root (CI, containers) Mosquitto would switch to user "mosquitto", which
            # cannot read this test's private tmp folder; production gives the files' group
            # to Mosquitto's user instead (README), as shared.broker.MosquittoBroker does
            with conf.open("a", encoding="utf-8") as f:
                f.write("user root\n")
        proc = walk.start("mosquitto", words)
        assert wait_until(lambda: port_open(mqtt_port) or proc.poll() is not None, TIMEOUT_S)
        assert proc.poll() is None, f"mosquitto exited: {walk.output('mosquitto')}"

    def run_terminal(words: list[str]) -> None:
        proc = walk.start("terminal", words, stdin=True)
        assert wait_until(
            lambda: quiet([words[0], "status", *words[2:4], "--json"]).get("state") == "online",
            TIMEOUT_S,
            interval_s=0.5,
        ), "the terminal never came online"
        before = holder(facts["card"])
        taps, expected_fen = tap_lines()
        assert proc.stdin is not None
        for line in taps:
            walk.log(f"  (typed into the terminal) {line}")
            proc.stdin.write(f"{line}\n".encode())
            proc.stdin.flush()
        facts["spent_fen"] = expected_fen
        assert wait_until(
            lambda: (
                holder(facts["card"], quiet_=True).get("subsidy_fen") == before["subsidy_fen"] - expected_fen
            ),
            TIMEOUT_S,
            interval_s=0.5,
        ), f"the taps never reached the server: {holder(facts['card'])}"

    def tap_lines() -> tuple[list[str], int]:
        """The README's shop tap examples, on the walkthrough's card, at its shop's prices
        (SKUs the walkthrough did not set up are left out of a basket)."""
        taps, total = [], 0
        for example in tap_examples(section):
            words = example.split()
            rest = []
            for w in words[2:]:
                sku, _, qty = w.partition("*")
                if sku.isdigit():
                    total += int(sku)
                    rest.append(w)
                elif sku in facts["items"]:
                    total += facts["items"][sku] * int(qty or 1)
                    rest.append(w)
            if rest:
                taps.append(" ".join([facts["card"], "shop", *rest]))
        assert len(taps) >= 2, f"expected the README's shop tap examples, found {taps}"
        return taps, total

    def quiet(words: list[str]) -> dict[str, Any]:
        """A JSON query while polling, kept out of the transcript."""
        proc = subprocess.run(
            walk.argv(words), cwd=walk.cwd, env=walk.env, capture_output=True, timeout=TIMEOUT_S
        )
        # a refusal (say, the terminal's database not created yet) is "not yet"
        return dict(json.loads(proc.stdout)) if proc.returncode == 0 else {}

    def holder(card: str, quiet_: bool = False) -> dict[str, Any]:
        words = ["canteen-server", "holder", "show", card, "--json"]
        if quiet_:
            return quiet(words)
        result = walk.run(words)
        assert result.code == 0
        return dict(result.json())

    def check_exit(result: Result) -> None:
        w = result.argv
        if w[:2] == ["canteen-server", "close-year"] and int(w[2]) >= datetime.now(SHANGHAI).year:
            # the year has not ended: refused, in two lines, Chinese first (exit 2)
            assert result.code == 2, result
            assert re.search(r"^错误：该期间尚未结束，不能结账（period_open）", result.stderr, re.M), (
                result.stderr
            )
            assert re.search(r"^error: period has not ended yet: year \d{4} ends at", result.stderr, re.M)
            facts["not_cleared"] = w[2]
            return
        if w[:3] == ["canteen-server", "report", "clearing"] and w[3] == facts.get("not_cleared"):
            # the clearing report of the year close-year just refused: there is none (exit 2)
            assert result.code == 2, result
            assert re.search(r"^错误：记录不存在（not_found）", result.stderr, re.M), result.stderr
            assert re.search(rf"^error: not found: {w[3]} is not cleared", result.stderr, re.M), result.stderr
            return
        assert result.code == 0, f"{shlex.join(w)} exited {result.code}:\n{result.stdout}\n{result.stderr}"
        remember(result)

    def remember(result: Result) -> None:
        w = result.argv
        if w[:3] == ["canteen-server", "unit", "add"]:
            facts["unit_name"] = w[3]
            facts["standard_fen"] = yuan_to_fen(w[w.index("--standard") + 1])
            facts["unit"] = result.stdout.split()[0]
        elif w[:3] == ["canteen-server", "canteen", "item-set"]:
            facts.setdefault("items", {})[w[4]] = yuan_to_fen(w[6])
            facts["canteen"] = w[3]
        elif w[:2] == ["canteen-server", "topup"]:
            facts["topup_fen"] = yuan_to_fen(w[3])
        elif w[:3] == ["canteen-server", "card", "replace"]:
            facts["card"] = w[4]
            facts["old_card"] = w[3]
        elif w[:2] == ["canteen-server", "allocate"]:
            facts["allocated"] = True
        elif w[:2] == ["canteen-server", "provision-terminal"]:
            facts["terminal"] = re.search(r"\bT\d{4}\b", result.stdout).group(0)  # type: ignore[union-attr]
            facts["enrol_code"] = CODE.search(result.stdout).group(0)  # type: ignore[union-attr]
        elif w[:2] == ["canteen-terminal", "status"]:
            # online with nothing unsent: polled, the last batch's acknowledgement may still
            # be on its way when the server has already applied it
            state = result.json()
            if state["state"] != "online" or state["unsent_sales"] != 0:
                assert wait_until(
                    lambda: (s := quiet(w)).get("state") == "online" and s.get("unsent_sales") == 0,
                    TIMEOUT_S,
                    0.5,
                ), quiet(w)
            facts["status_ran"] = True

    try:
        for command, comment in lines:
            if command in SKIPPED:
                skipped.add(command)
                walk.log(f"# skipped: {command}  ({SKIPPED[command]})")
                continue
            for part in substitute(command).split(" && "):
                execute(part.strip())
            if "also:" in comment:
                for words in also:
                    execute(" ".join(words))
        walk.log("# --- the README's commands ran; checking the results ---")
        check_results(walk, facts, table)
    except BaseException:
        walk.log("# README commands run: " + "; ".join(ran))
        raise

    stale = [old for old, _ in table if old not in used] + [c for c in SKIPPED if c not in skipped]
    assert not stale, f"the substitution table no longer matches the README: {stale}"
    for must in ("canteen-server init", "mosquitto -c", "canteen-server run", "canteen-terminal run"):
        assert any(c.startswith(must) for c in ran), f"README walkthrough no longer has {must!r}"


def check_results(walk: Walk, facts: dict[str, Any], table: list[tuple[str, str]]) -> None:
    run = walk.run
    units = run(["canteen-server", "unit", "list", "--json"])
    assert units.code == 0
    unit = next(u for u in units.json() if u["id"] == facts["unit"])
    assert unit["name"] == facts["unit_name"] and facts["canteen"] in unit["canteens"]
    staff = unit["active_holders"]
    assert staff == 2, unit

    found = run(["canteen-server", "holder", "find", "王", "--json"]).json()
    assert sorted(c["card_id"] for h in found for c in h["cards"]) == sorted(
        [facts["old_card"], facts["card"]]
    )

    # the allocation (standard × headcount) and the top-up moved money; both purses moved to
    # the replacement card; the taps were paid from the subsidy first
    shown = run(["canteen-server", "holder", "show", facts["card"], "--json"]).json()
    assert shown["subsidy_fen"] == facts["standard_fen"] - facts["spent_fen"], shown
    assert shown["self_fen"] == facts["topup_fen"], shown

    daily = run(["canteen-server", "report", "daily", "--json"])
    assert daily.code == 0
    assert daily.json()["totals"]["amount_fen"] == facts["spent_fen"], daily.stdout

    # the terminal's own totals and status (the README's commands ran with --json; polled
    # here until the acknowledgement of the last batch has arrived)
    config = next(new for old, new in table if old == "/etc/canteen/") + "t1.json"
    totals = run(["canteen-terminal", "totals", "--config", config, "--json"]).json()
    assert totals["total"]["amount_fen"] == facts["spent_fen"], totals

    def status() -> dict[str, Any]:
        result = run(["canteen-terminal", "status", "--json"])  # CANTEEN_TERMINAL_CONFIG exported
        assert result.code == 0
        return dict(result.json())

    assert facts.get("status_ran")
    final = status()
    assert final["terminal_id"] == facts["terminal"]
    assert final["unsent_sales"] == 0, final
    assert run(["canteen-server", "check"]).code == 0

    # the README's last step revoked the terminal and reloaded Mosquitto
    terminals = run(["canteen-server", "report", "terminals", "--json"]).json()["terminals"]
    assert [t["state"] for t in terminals if t["terminal_id"] == facts["terminal"]] == ["revoked"], terminals
