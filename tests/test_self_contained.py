"""The repository is self-contained: nothing the tests, benchmarks, demo or docs use lives
outside it. A user has only the clone; a path that climbs out of it works on the developer's
machine and fails on theirs.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# a relative path that leaves the checkout, a machine's absolute work folder, or a Path
# chain that climbs three folders from a file at most one folder deep
UP = r"\.\./"  # one folder up, as a path writes it
OUTSIDE = re.compile(
    UP + r"(?:shared|seed|faces)\b|(?<![\w.])/" + r"work/|" + r"\.".join(["parent"] * 3) + "|"
    r"\"shared\" / \"(?:faces|seed)\""
)
TEXT_SUFFIXES = {".py", ".md", ".cfg", ".toml", ".txt", ".json", ".sh", ".ini", ".yml", ".yaml", ""}
SKIP = {"tests/test_self_contained.py"}


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / n for n in names if n not in SKIP and (ROOT / n).is_file()]


def outside_references(files: list[Path]) -> list[str]:
    found = []
    for path in files:
        if path.suffix not in TEXT_SUFFIXES or path.name.endswith((".jpg", ".png")):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                found.append(f"{name}:{number}: {line.strip()}")
    return found


def test_no_code_or_doc_refers_to_a_path_outside_the_repository() -> None:
    assert outside_references(_tracked_files()) == []


def test_the_check_catches_a_path_outside(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    climb = ".".join(["parent"] * 3)  # written here in pieces, so this file names no such path
    planted.write_text(f'FACES = Path(__file__).{climb} / "shared" / "faces"\n')
    doc = tmp_path / "planted.md"
    doc.write_text("the policy is in `" + ".." + "/shared/seed/`\n")
    assert len(outside_references([planted, doc])) == 2


def test_the_face_photos_and_the_policy_ship_with_the_repository() -> None:
    faces = ROOT / "tests" / "data" / "faces"
    assert len(list(faces.glob("*_[0-9].*"))) >= 10
    assert (faces / "two_people.jpg").is_file()
    assert "MIT License" in (faces / "LICENSE-face_recognition-examples.txt").read_text()
    policy = (ROOT / "docs" / "policy" / "zhuzhou-canteen-one-card-2023.txt").read_text()
    assert "食堂一卡通" in policy and "不得提现" in policy
