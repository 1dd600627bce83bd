"""CRC-32 arithmetic: the CRC of any window of a byte stream from two prefix CRCs, without
reading the window again::

    crc32(a + b) == crc_shift(crc32(a), len(b)) ^ crc32(b)      (zlib's crc32_combine)

so ``crc32(data[i:j]) == prefix(j) ^ crc_shift(prefix(i), j - i)`` where ``prefix(k)`` is the
running CRC of ``data[first:k]``. The frame search of ``engine.core.framing`` uses it to check
many overlapping candidate frames in one pass. Values are polynomials over GF(2) in zlib's
bit-reversed order: bit 31 is x^0.
"""

from __future__ import annotations

import functools
from typing import Final

_CRC_POLY: Final = 0xEDB88320
_Tables = tuple[list[int], list[int], list[int], list[int]]


def _times_x(value: int) -> int:
    return (value >> 1) ^ _CRC_POLY if value & 1 else value >> 1


def _multiplier(factor: int) -> _Tables:
    """Byte-indexed tables that multiply any value by ``factor`` modulo the polynomial."""
    columns = [0] * 32  # columns[bit] = factor * (the one-bit value 1 << bit)
    value = factor
    for bit in range(31, -1, -1):
        columns[bit] = value
        value = _times_x(value)
    tables = []
    for byte in range(4):
        table = [0] * 256
        for index in range(1, 256):
            low = index & -index
            table[index] = table[index ^ low] ^ columns[8 * byte + low.bit_length() - 1]
        tables.append(table)
    return tables[0], tables[1], tables[2], tables[3]


def multiply(tables: _Tables, value: int) -> int:
    low, mid_low, mid_high, high = tables
    return (
        low[value & 0xFF]
        ^ mid_low[(value >> 8) & 0xFF]
        ^ mid_high[(value >> 16) & 0xFF]
        ^ high[value >> 24]
    )


@functools.cache
def _x_to_the_2_to_the(k: int) -> tuple[int, _Tables]:
    """x^(2^k) modulo the polynomial, with its multiplication tables (built on demand)."""
    if k == 0:
        factor = 1 << 30  # x^1
    else:
        previous, tables = _x_to_the_2_to_the(k - 1)
        factor = multiply(tables, previous)
    return factor, _multiplier(factor)


def crc_shift(crc: int, length: int) -> int:
    """``crc`` multiplied by x^(8 * length): what appending ``length`` bytes does to it."""
    k = 3  # a byte is 2^3 bits
    while length:
        if length & 1:
            crc = multiply(_x_to_the_2_to_the(k)[1], crc)
        length >>= 1
        k += 1
    return crc


@functools.lru_cache(maxsize=64)
def shift_tables(length: int) -> _Tables:
    """Tables that do ``crc_shift(crc, length)`` in one step, for lengths seen often."""
    return _multiplier(crc_shift(1 << 31, length))  # 1 << 31 is x^0
