"""NTAG 424 DNA "SUN" messages (Secure Unique NFC): verify them offline, and make them.

A card personalised for SUN writes, on every read, a fresh message into the URL in its NDEF
file: the UID and a read counter, encrypted (``e``/``picc_data``) or in plain text
(``uid`` + ``ctr``), and an 8-byte MAC (``c``/``cmac``). A copied UID has no MAC; a copied
message has an old counter. Pure code (AES via ``cryptography``), no device or clock, so the
terminal verifies a tap without the network (NXP AN12196, AES mode):

* PICCData = AES-128-CBC⁻¹(SDMMetaReadKey, IV 0, e): tag byte ``0xC7`` (UID and counter
  mirrored, UID length 7), UID, counter (3 bytes, LSB first), random padding.
* session MAC key = AES-CMAC(SDMFileReadKey, ``3CC300010080`` ‖ UID ‖ counter LSB-first).
* SDMMAC = the odd-indexed bytes of AES-CMAC(session key, MAC input), where the MAC input is
  the URL text from ``SDMMACInputOffset`` up to the MAC (empty when the two offsets are equal,
  e.g. ``…&enc=<hex>&cmac=`` when encrypted file data is mirrored).

Keys: the meta-read key is one per city (it is needed before the UID is known); the file-read
(MAC) key is diversified per card from a master key with :func:`card_file_key`, the scheme
our card issuing tool uses when it personalises a card. Counter freshness (it must increase)
is the caller's business: see ``terminal/card_check.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

SV2_PREFIX = bytes.fromhex("3CC300010080")
PICC_TAG_UID_CTR_7 = 0xC7  # UID mirrored, counter mirrored, UID length 7
_ZERO_IV = bytes(16)


class SunError(ValueError):
    """A SUN message that is malformed or whose MAC does not verify."""


@dataclass(frozen=True)
class SunMessage:
    """A verified SUN read: the card's real UID (hex, upper case) and its read counter."""

    uid_hex: str
    counter: int


@dataclass(frozen=True)
class SunKeys:
    """The keys to check SUN messages: the city's meta-read key and the per-card MAC key."""

    meta_read_key: bytes
    file_read_key: Callable[[bytes], bytes]  # UID -> that card's SDMFileReadKey

    @classmethod
    def from_master(cls, master_key: bytes) -> SunKeys:
        return cls(meta_key(master_key), lambda uid: card_file_key(master_key, uid))

    @classmethod
    def fixed(cls, meta_read_key: bytes, file_read_key: bytes) -> SunKeys:
        """The same MAC key for every card (NXP's test vectors use all-zero keys)."""
        return cls(meta_read_key, lambda _uid: file_read_key)


def meta_key(master_key: bytes) -> bytes:
    """The SDMMetaReadKey for every card of the city (not diversified)."""
    return hmac.new(master_key, b"canteen/ntag424/sdm-meta-read", hashlib.sha256).digest()[:16]


def card_file_key(master_key: bytes, uid: bytes) -> bytes:
    """One card's SDMFileReadKey, diversified from the master key by its UID."""
    return hmac.new(master_key, b"canteen/ntag424/sdm-file-read\x00" + uid, hashlib.sha256).digest()[:16]


def _cmac(key: bytes, data: bytes) -> bytes:
    c = CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def _aes_cbc(key: bytes, data: bytes, *, decrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(_ZERO_IV))
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()


def sun_mac(file_read_key: bytes, uid: bytes, counter: int, mac_input: bytes = b"") -> bytes:
    """The 8-byte SDMMAC for one read."""
    session_key = _cmac(file_read_key, SV2_PREFIX + uid + counter.to_bytes(3, "little"))
    return _cmac(session_key, mac_input)[1::2]


def decrypt_picc_data(meta_read_key: bytes, encrypted: bytes) -> tuple[bytes, int]:
    """(UID, counter) from the encrypted PICCData."""
    if len(encrypted) != 16:
        raise SunError("PICCData must be 16 bytes")
    plain = _aes_cbc(meta_read_key, encrypted, decrypt=True)
    if plain[0] != PICC_TAG_UID_CTR_7:
        raise SunError("PICCData does not decrypt (wrong key or not a SUN message)")
    return plain[1:8], int.from_bytes(plain[8:11], "little")


def verify_encrypted(keys: SunKeys, picc_enc: bytes, mac: bytes, mac_input: bytes = b"") -> SunMessage:
    uid, counter = decrypt_picc_data(keys.meta_read_key, picc_enc)
    _check_mac(keys.file_read_key(uid), uid, counter, mac, mac_input)
    return SunMessage(uid.hex().upper(), counter)


def verify_plain(keys: SunKeys, uid: bytes, counter: int, mac: bytes, mac_input: bytes = b"") -> SunMessage:
    _check_mac(keys.file_read_key(uid), uid, counter, mac, mac_input)
    return SunMessage(uid.hex().upper(), counter)


def _check_mac(file_key: bytes, uid: bytes, counter: int, mac: bytes, mac_input: bytes) -> None:
    if len(mac) != 8:
        raise SunError("SDMMAC must be 8 bytes")
    if not hmac.compare_digest(sun_mac(file_key, uid, counter, mac_input), mac):
        raise SunError("SDMMAC does not verify")


def _hex(value: str, what: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise SunError(f"{what}: not hex") from exc


def verify_url(keys: SunKeys, url: str) -> SunMessage:
    """Verify the SUN URL a card's NDEF record carried.

    Encrypted form: ``?e=<32 hex>&c=<16 hex>`` (or ``picc_data``/``cmac``, optionally with
    ``enc=<hex>`` mirrored file data before the MAC, which is then the MAC input). Plain form:
    ``?uid=<14 hex>&ctr=<6 hex>&cmac=<16 hex>``.
    """
    query = urlsplit(url).query
    params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
    mac_hex = params.get("c") or params.get("cmac")
    if not mac_hex:
        raise SunError("no SDMMAC in the URL")
    mac = _hex(mac_hex, "SDMMAC")
    mac_input = b""
    if "enc" in params:  # MAC input runs from the mirrored file data up to the MAC value
        start = query.index("enc=") + len("enc=")
        end = query.rindex(mac_hex)
        mac_input = query[start:end].encode("ascii")
    enc = params.get("e") or params.get("picc_data")
    if enc:
        return verify_encrypted(keys, _hex(enc, "PICCData"), mac, mac_input)
    if "uid" in params and "ctr" in params:
        uid = _hex(params["uid"], "uid")
        if len(uid) != 7:
            raise SunError("uid must be 7 bytes")
        return verify_plain(keys, uid, int.from_bytes(_hex(params["ctr"], "ctr"), "big"), mac, mac_input)
    raise SunError("no PICCData in the URL")


def make_url(base: str, keys: SunKeys, uid: bytes, counter: int, padding: bytes | None = None) -> str:
    """The URL a personalised card would produce for read number ``counter`` (encrypted form,
    empty MAC input). Used by the card emulator and the issuing tool's self-test."""
    pad = padding if padding is not None else os.urandom(5)
    plain = bytes([PICC_TAG_UID_CTR_7]) + uid + counter.to_bytes(3, "little") + pad
    picc_enc = _aes_cbc(keys.meta_read_key, plain, decrypt=False)
    mac = sun_mac(keys.file_read_key(uid), uid, counter)
    return f"{base}?e={picc_enc.hex().upper()}&c={mac.hex().upper()}"
