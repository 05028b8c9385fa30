"""Counter-based random numbers for noisy top-k gating.

Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy
as 1, 2, 3", SC 2011), as in Random123, and the Box-Muller transform that
turns one Philox block into one N(0, 1) sample.  Everything here is exactly
specified so that a compiled kernel produces the same bits (docs/semantics.md,
"Noise").
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "PHILOX_M0", "PHILOX_M1", "PHILOX_W0", "PHILOX_W1",
    "philox4x32", "seed_to_key", "uniform_pair", "box_muller", "normal",
]

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
_MASK32 = 0xFFFFFFFF
_TWO_PI_F32 = np.float32(2.0 * np.pi)   # 6.2831855f, the float32 nearest 2*pi


def philox4x32(counter, key, rounds: int = 10) -> np.ndarray:
    """Philox4x32-R block function, vectorised.

    ``counter`` [..., 4] and ``key`` [..., 2] (broadcastable, values taken mod
    2^32) -> [..., 4] uint32.  One round maps (c0, c1, c2, c3) with key
    (k0, k1) to (hi(M1*c2) ^ c1 ^ k0, lo(M1*c2), hi(M0*c0) ^ c3 ^ k1, lo(M0*c0));
    the key is bumped by the Weyl constants (W0, W1) between rounds.
    """
    counter = np.asarray(counter, dtype=np.uint64) & np.uint64(_MASK32)
    key = np.asarray(key, dtype=np.uint64) & np.uint64(_MASK32)
    c0, c1, c2, c3 = (counter[..., i] for i in range(4))
    k0, k1 = key[..., 0], key[..., 1]
    m0, m1 = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1)
    mask, shift = np.uint64(_MASK32), np.uint64(32)
    for r in range(rounds):
        if r > 0:
            k0 = (k0 + np.uint64(PHILOX_W0)) & mask
            k1 = (k1 + np.uint64(PHILOX_W1)) & mask
        p0 = m0 * c0          # < 2^64: both factors < 2^32
        p1 = m1 * c2
        c0, c1, c2, c3 = ((p1 >> shift) ^ c1 ^ k0, p1 & mask,
                          (p0 >> shift) ^ c3 ^ k1, p0 & mask)
    return np.stack(np.broadcast_arrays(c0, c1, c2, c3), axis=-1).astype(np.uint32)


def seed_to_key(seed) -> tuple:
    """uint64 seed -> Philox key (k0, k1) = (seed & 0xffffffff, seed >> 32).

    Negative Python ints are taken mod 2^64.
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    s = int(seed) % (1 << 64)
    return (s & _MASK32, s >> 32)


def uniform_pair(r0, r1):
    """u1 = ((r0 >> 8) + 1) * 2^-24 in (0, 1], u2 = (r1 >> 8) * 2^-24 in [0, 1), float32."""
    r0 = np.asarray(r0, dtype=np.uint32)
    r1 = np.asarray(r1, dtype=np.uint32)
    scale = np.float32(2.0 ** -24)
    u1 = ((r0 >> np.uint32(8)).astype(np.float32) + np.float32(1.0)) * scale
    u2 = (r1 >> np.uint32(8)).astype(np.float32) * scale
    return u1, u2


def box_muller(u1, u2) -> np.ndarray:
    """n = sqrt(-2 ln u1) * cos(2 pi u2), every step in float32.

    Steps: a = ln(u1); b = -2 * a; r = sqrt(b); theta = float32(2 pi) * u2;
    n = r * cos(theta).
    """
    u1 = np.asarray(u1, dtype=np.float32)
    u2 = np.asarray(u2, dtype=np.float32)
    with np.errstate(all="ignore"):
        a = np.log(u1)
        b = np.float32(-2.0) * a
        r = np.sqrt(b)
        theta = _TWO_PI_F32 * u2
        return (r * np.cos(theta)).astype(np.float32)


def normal(seed, tokens: int, experts: int) -> np.ndarray:
    """The noise matrix n[t, e] ~ N(0, 1), shape [tokens, experts], float32.

    Sample (t, e) uses Philox4x32-10 with key seed_to_key(seed) and counter
    (e, t, 0, 0); words r0, r1 of the output feed :func:`uniform_pair` and
    :func:`box_muller`.
    """
    if tokens >= (1 << 32) or experts >= (1 << 32):
        raise ValueError("noise counters are 32-bit: tokens and experts must be < 2^32")
    k0, k1 = seed_to_key(seed)
    t = np.arange(tokens, dtype=np.uint64)[:, None]
    e = np.arange(experts, dtype=np.uint64)[None, :]
    t, e = np.broadcast_arrays(t, e)
    zero = np.zeros_like(t)
    counter = np.stack([e, t, zero, zero], axis=-1)
    key = np.array([k0, k1], dtype=np.uint64)
    r = philox4x32(counter, key)
    u1, u2 = uniform_pair(r[..., 0], r[..., 1])
    return box_muller(u1, u2)
