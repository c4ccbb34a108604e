"""NTAG 424 DNA SUN verification against NXP's published vectors (AN12196, as reproduced in
the sdm-backend project's tests) and against crafted forgeries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardware.ntag424 import SunError, SunKeys, make_url, verify_encrypted, verify_plain, verify_url

ZERO = SunKeys.fixed(bytes(16), bytes(16))


def test_an12196_encrypted_vector_gives_uid_and_counter() -> None:
    msg = verify_url(ZERO, "https://ntag.nxp.com/424?e=EF963FF7828658A599F3041510671E88&c=94EED9EE65337086")
    assert msg.uid_hex == "04DE5F1EACC040"
    assert msg.counter == 61


def test_an12196_vector_with_mirrored_file_data_macs_the_url_text() -> None:
    url = (
        "https://www.my424dna.com/?picc_data=FD91EC264309878BE6345CBE53BADF40"
        "&enc=CEE9A53E3E463EF1F459635736738962&cmac=ECC1E7F6C6C73BF6"
    )
    msg = verify_url(ZERO, url)
    assert (msg.uid_hex, msg.counter) == ("04958CAA5C5E80", 8)


def test_vector_with_custom_keys() -> None:
    keys = SunKeys.fixed(
        bytes.fromhex("42aff114f2cb3b6141be6dc95dfc5416"), bytes.fromhex("b62a9baf092439bd43c62aee96b970c5")
    )
    msg = verify_encrypted(
        keys,
        bytes.fromhex("8ACADDEF0A9B62CDAE39A16B83FC14DE"),
        bytes.fromhex("238B2543A8DEBAD8"),
        b"B8436E11F627BB7F543FCC0C1E0D1A89",
    )
    assert (msg.uid_hex, msg.counter) == ("041D3C8A2D6B80", 291)


def test_plain_sun_vector() -> None:
    msg = verify_url(ZERO, "https://x.example/?uid=041E3C8A2D6B80&ctr=000006&cmac=4B00064004B0B3D3")
    assert (msg.uid_hex, msg.counter) == ("041E3C8A2D6B80", 6)


def test_wrong_mac_is_refused() -> None:
    url = (
        "https://www.my424dna.com/?picc_data=FD91EC264309878BE6345CBE53BADF40"
        "&enc=CEE9A53E3E463EF1F459635736738962&cmac=3CC1E7F6C6C33B33"
    )
    with pytest.raises(SunError):
        verify_url(ZERO, url)


def test_plain_message_with_a_raised_counter_is_refused() -> None:
    # a cloner who copies the UID and bumps the counter cannot make the MAC
    with pytest.raises(SunError):
        verify_plain(ZERO, bytes.fromhex("041E3C8A2D6B80"), 7, bytes.fromhex("4B00064004B0B3D3"))


def test_message_under_another_key_does_not_decrypt() -> None:
    other = SunKeys.from_master(b"another city master key.........")
    with pytest.raises(SunError):
        verify_url(other, "https://ntag.nxp.com/424?e=EF963FF7828658A599F3041510671E88&c=94EED9EE65337086")


@pytest.mark.parametrize(
    "url",
    [
        "https://x/?e=EF96&c=94EED9EE65337086",  # short PICCData
        "https://x/?e=EF963FF7828658A599F3041510671E88",  # no MAC
        "https://x/?c=94EED9EE65337086",  # no PICCData
        "https://x/?e=ZZ963FF7828658A599F3041510671E88&c=94EED9EE65337086",  # not hex
        "https://x/?uid=041E3C&ctr=000006&cmac=4B00064004B0B3D3",  # short UID
        "https://x/?e=EF963FF7828658A599F3041510671E88&c=94EED9EE653370",  # short MAC
    ],
)
def test_malformed_sun_urls_are_refused(url: str) -> None:
    with pytest.raises(SunError):
        verify_url(ZERO, url)


@given(uid=st.binary(min_size=7, max_size=7), counter=st.integers(0, 2**24 - 1))
def test_a_card_personalised_from_the_master_key_verifies(uid: bytes, counter: int) -> None:
    keys = SunKeys.from_master(b"\x01" * 32)
    msg = verify_url(keys, make_url("https://canteen.example/c", keys, uid, counter))
    assert (msg.uid_hex, msg.counter) == (uid.hex().upper(), counter)


def test_each_card_has_its_own_mac_key() -> None:
    keys = SunKeys.from_master(b"\x01" * 32)
    a, b = bytes.fromhex("04000000000001"), bytes.fromhex("04000000000002")
    assert keys.file_read_key(a) != keys.file_read_key(b)
