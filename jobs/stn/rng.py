"""Counter-based random numbers: a pure function of (key, step, draw, element), made of tensor ops.

``torch.Generator`` keeps its state on the host: re-seeding it every step (to make a batch a
function of the step) cannot happen inside a captured CUDA graph, and a generator that simply
advances makes a resumed run depend on how many numbers came before. Here every number is a
hash of its coordinates instead, computed on the device from a step counter that is itself a
device tensor, so a captured graph draws fresh numbers at every replay, a resumed run draws
exactly what an uninterrupted one would, and CPU and GPU draw the same bits.

The hash is Chris Wellons' ``lowbias32`` (second variant), whose multipliers are below 2**31 so
that every product of a 32-bit value fits in a signed int64: no overflow on any device.
"""

from __future__ import annotations

import math

import torch

MASK32 = 0xFFFFFFFF
_MULTIPLIERS = (0x21F0AAAD, 0x735A2D97)
_DRAW_STRIDE = 0x9E3779B9  # spreads the draws of one step far apart in the counter space


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit avalanche hash of int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * _MULTIPLIERS[0]) & MASK32
    x = x ^ (x >> 15)
    x = (x * _MULTIPLIERS[1]) & MASK32
    return x ^ (x >> 15)


class CounterRandom:
    """Uniform, normal and integer draws for one step, keyed by a 64-bit seed and a step tensor.

    ``at(step)`` starts a step (``step`` a 0-d int64 tensor, or an int); each later call is the
    next draw of that step, so the same sequence of calls gives the same numbers. Nothing here
    reads a tensor back to the host.
    """

    def __init__(self, key: int, device):
        self.device = torch.device(device)
        self._key = (key & MASK32, (key >> 32) & MASK32)
        self._step = torch.zeros((), dtype=torch.int64, device=self.device)
        self._draw = 0

    def at(self, step) -> "CounterRandom":
        if not isinstance(step, torch.Tensor):  # a fill on the device, not a copy from the host
            step = torch.full((), step, dtype=torch.int64, device=self.device)
        self._step, self._draw = step, 0
        return self

    def bits(self, *shape: int) -> torch.Tensor:
        """Independent 32-bit values in int64, one per element of ``shape``."""
        count = math.prod(shape)
        salt = mix32((self._step ^ self._key[0]) & MASK32)
        offset = (self._draw * _DRAW_STRIDE) & MASK32
        self._draw += 1
        index = torch.arange(count, dtype=torch.int64, device=self.device)
        x = mix32(((index + offset) & MASK32) ^ salt)
        return mix32(x ^ self._key[1]).view(shape)

    def rand(self, *shape: int) -> torch.Tensor:
        """Uniform float32 in [0, 1), 24 bits of resolution."""
        return (self.bits(*shape) >> 8).to(torch.float32) * (1.0 / (1 << 24))

    def randn(self, *shape: int) -> torch.Tensor:
        """Standard normal float32 (Box-Muller)."""
        u1 = 1.0 - self.rand(*shape)  # (0, 1]: log stays finite
        u2 = self.rand(*shape)
        return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)

    def randint(self, high: int, *shape: int) -> torch.Tensor:
        """Integers uniform in [0, high], int64."""
        return self.bits(*shape) % (high + 1)


def permutation(key: int, count: int, device) -> torch.Tensor:
    """A permutation of range(count) fixed by ``key``, computed on ``device`` without the host."""
    keys = CounterRandom(key, device).at(0)
    high, low = keys.bits(count), keys.bits(count)
    return torch.argsort((high << 31) | (low >> 1), stable=True)
