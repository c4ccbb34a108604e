"""Signed update bundles (``shared.release``) and the staged choice of terminals
(``server.downstream.update_offers``): what a terminal accepts and what it refuses, by code."""

from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.downstream.update_offers import in_stage
from server.registry.updates import parse_stage
from shared.errors import DomainError
from shared.release import (
    ReleaseKey,
    build_bundle,
    check_offer,
    is_newer,
    open_bundle,
    parse_version,
    verify_tree,
    version_key,
)

KEY = ReleaseKey.generate()
FILES = {"terminal/agent.py": b"print('agent')\n", "shared/money.py": b"FEN = 1\n", "hardware/nfc.py": b"\n"}


def bundle(
    version: str = "0.2.0", files: dict[str, bytes] | None = None, key: ReleaseKey = KEY, **kw: str
) -> bytes:
    return build_bundle("terminal", version, files or FILES, key, 1_764_000_000_000, **kw)


def members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]


def retar(entries: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def refusal(data: bytes, key: ReleaseKey = KEY) -> str:
    with pytest.raises(DomainError) as exc:
        open_bundle(data, key.public_hex)
    return exc.value.code


def test_a_bundle_signed_by_the_release_key_opens_with_every_file() -> None:
    b = open_bundle(bundle(), KEY.public_hex)
    assert b.files == FILES
    assert b.manifest.version == "0.2.0" and b.manifest.kind == "terminal"
    check_offer(b.manifest, "terminal", "0.1.0")  # newer: accepted


def test_a_bundle_signed_by_another_key_is_refused() -> None:
    assert refusal(bundle(key=ReleaseKey.generate())) == "update_bad_signature"


def test_a_manifest_changed_after_signing_is_refused() -> None:
    entries = members(bundle())
    entries[0] = (entries[0][0], entries[0][1].replace(b'"0.2.0"', b'"9.9.9"'))
    assert refusal(retar(entries)) == "update_bad_signature"


def test_a_file_changed_after_signing_is_refused_as_corrupted() -> None:
    entries = [(n, d + b"# evil\n" if n == "files/terminal/agent.py" else d) for n, d in members(bundle())]
    assert refusal(retar(entries)) == "update_corrupted"


def test_a_missing_or_an_extra_file_is_refused_as_corrupted() -> None:
    entries = members(bundle())
    assert refusal(retar([e for e in entries if e[0] != "files/shared/money.py"])) == "update_corrupted"
    assert refusal(retar([*entries, ("files/terminal/extra.py", b"x")])) == "update_corrupted"


def test_a_link_or_a_path_out_of_the_folder_is_refused() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("files/terminal/agent.py")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    assert refusal(out.getvalue()) == "update_malformed"
    with pytest.raises(DomainError) as exc:
        bundle(files={"terminal/../../etc/cron.d/x": b"x"})
    assert exc.value.code == "update_malformed"
    assert refusal(b"not a tar at all" * 100) == "update_malformed"


def test_a_version_not_newer_is_a_downgrade_and_refused() -> None:
    for running in ("0.2.0", "0.2", "0.10.0", "1"):
        with pytest.raises(DomainError) as exc:
            check_offer(open_bundle(bundle("0.2.0"), KEY.public_hex).manifest, "terminal", running)
        assert exc.value.code == "update_downgrade", running


def test_a_version_too_old_to_be_replaced_is_refused() -> None:
    manifest = open_bundle(bundle("2.0.0", min_version="1.5"), KEY.public_hex).manifest
    with pytest.raises(DomainError) as exc:
        check_offer(manifest, "terminal", "1.4.9")
    assert exc.value.code == "update_too_old"
    check_offer(manifest, "terminal", "1.5")


def test_an_installed_tree_is_checked_file_by_file() -> None:
    manifest = open_bundle(bundle(), KEY.public_hex).manifest
    verify_tree(manifest, FILES.get)
    with pytest.raises(DomainError) as exc:
        verify_tree(manifest, {**FILES, "shared/money.py": b"FEN = 2\n"}.get)
    assert exc.value.code == "update_corrupted"


@given(
    st.lists(st.integers(0, 999), min_size=1, max_size=4),
    st.lists(st.integers(0, 999), min_size=1, max_size=4),
)
def test_versions_compare_as_numbers_and_trailing_zeros_do_not_count(a: list[int], b: list[int]) -> None:
    va, vb = ".".join(map(str, a)), ".".join(map(str, b))
    assert parse_version(va) == tuple(a)
    assert is_newer(va, vb) == (version_key(va) > version_key(vb))
    assert not (is_newer(va, vb) and is_newer(vb, va))
    assert not is_newer(va + ".0" if len(a) < 4 else va, va)


@given(
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=12),
    st.integers(1, 99),
    st.integers(1, 99),
)
def test_widening_a_stage_keeps_every_terminal_already_chosen(terminal_id: str, a: int, b: int) -> None:
    low, high = min(a, b), max(a, b)
    if in_stage(terminal_id, "terminal", "1.2.0", low):
        assert in_stage(terminal_id, "terminal", "1.2.0", high)
    assert in_stage(terminal_id, "terminal", "1.2.0", 100)


def test_a_stage_chooses_about_its_share_of_the_fleet_the_same_way_every_time() -> None:
    fleet = [f"T{n:04d}" for n in range(1, 2001)]
    chosen = [t for t in fleet if in_stage(t, "terminal", "1.2.0", 5)]
    assert 60 <= len(chosen) <= 140  # 5 % of 2,000 = 100
    assert chosen == [t for t in fleet if in_stage(t, "terminal", "1.2.0", 5)]
    other_release = [t for t in fleet if in_stage(t, "terminal", "1.3.0", 5)]
    assert other_release != chosen  # each release picks its own first terminals


def test_a_stage_is_a_whole_percentage() -> None:
    assert parse_stage("5%") == 5 and parse_stage("100") == 100
    for bad in ("0%", "101%", "0.5%", "-5", "five"):
        with pytest.raises(DomainError):
            parse_stage(bad)
