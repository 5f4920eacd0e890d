"""Plain-Python COBS and CRC-16/CCITT-FALSE: for encoding (commands, emulators) and as the
readable reference the bulk kernels are tested against. Not for the receive path.

COBS (Cheshire & Baker, 1999) replaces every 0x00 so that 0x00 can end a frame: each block
starts with a code byte n (1..255) meaning "n - 1 data bytes follow, then a zero", except
that code 255 carries 254 bytes and no zero, and the last block's zero is implied away.
"""

from __future__ import annotations

import binascii

__all__ = ["CobsError", "cobs_decode", "cobs_encode", "crc16_ccitt_false"]


class CobsError(ValueError):
    """The bytes are not a valid COBS block (a zero inside, or a code past the end)."""


def crc16_ccitt_false(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no xor out)."""
    return binascii.crc_hqx(data, 0xFFFF)


def cobs_encode(data: bytes | bytearray | memoryview) -> bytes:
    """COBS-encodes `data` (no delimiter appended)."""
    out = bytearray()
    block = bytearray()
    for b in bytes(data):
        if b == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(b)
            if len(block) == 254:
                out.append(255)
                out += block
                block.clear()
    out.append(len(block) + 1)
    out += block
    return bytes(out)


def cobs_decode(data: bytes | bytearray | memoryview) -> bytes:
    """Decodes one COBS block (without its delimiter); raises `CobsError` when malformed."""
    src = bytes(data)
    out = bytearray()
    i, n = 0, len(src)
    while i < n:
        code = src[i]
        end = i + code
        if code == 0 or end > n:
            raise CobsError(f"code byte {code} at {i} is zero or points past the end ({n})")
        chunk = src[i + 1 : end]
        if 0 in chunk:
            raise CobsError(f"a zero byte inside the block starting at {i}")
        out += chunk
        i = end
        if code != 255 and i < n:
            out.append(0)
    return bytes(out)
