"""MD5 that can resume from a stored internal state (RFC 1321).

hashlib cannot start an MD5 from a saved state, and CRAM-MD5's stored key is just
that: the MD5 states after the HMAC key's inner and outer pad blocks (RFC 2104
section 4, Dovecot's ``{CRAM-MD5}`` scheme). Answering a CRAM-MD5 challenge from
them hashes a few dozen bytes, so plain Python is fast enough.
"""

from __future__ import annotations

import math
import struct

_INIT = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
_SHIFTS = [7, 12, 17, 22] * 4 + [5, 9, 14, 20] * 4 + [4, 11, 16, 23] * 4 + [6, 10, 15, 21] * 4
_K = [int(abs(math.sin(i + 1)) * 2**32) & 0xFFFFFFFF for i in range(64)]
_MASK = 0xFFFFFFFF

State = tuple[int, int, int, int]


def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & _MASK


def compress(state: State, block: bytes) -> State:
    """One MD5 compression of a 64-byte block."""
    m = struct.unpack("<16I", block)
    a, b, c, d = state
    for i in range(64):
        if i < 16:
            f, g = (b & c) | (~b & d), i
        elif i < 32:
            f, g = (d & b) | (~d & c), (5 * i + 1) % 16
        elif i < 48:
            f, g = b ^ c ^ d, (3 * i + 5) % 16
        else:
            f, g = c ^ (b | ~d & _MASK), (7 * i) % 16
        f = (f + a + _K[i] + m[g]) & _MASK
        a, d, c = d, c, b
        b = (b + _rotl(f, _SHIFTS[i])) & _MASK
    return tuple((x + y) & _MASK for x, y in zip(state, (a, b, c, d), strict=True))


def resume(state: State, done: int, data: bytes) -> bytes:
    """The MD5 digest of a message whose first ``done`` bytes (a multiple of 64)
    left ``state``, followed by ``data``."""
    if done % 64:
        raise ValueError("a resumed MD5 must start on a block boundary")
    total = done + len(data)
    data += b"\x80" + b"\x00" * ((55 - total) % 64) + struct.pack("<Q", (total * 8) % 2**64)
    for i in range(0, len(data), 64):
        state = compress(state, data[i:i + 64])
    return struct.pack("<4I", *state)


def state_after_block(block: bytes) -> State:
    """The MD5 state after hashing one 64-byte block from the start."""
    return compress(_INIT, block)


def to_bytes(state: State) -> bytes:
    """Little-endian words, as Dovecot stores them (and as MD5 writes its digest)."""
    return struct.pack("<4I", *state)


def from_bytes(raw: bytes) -> State:
    return struct.unpack("<4I", raw)
