"""``affine_grid`` as broadcast arithmetic: the same grid as ``F.affine_grid(..., align_corners=False)``.

torch's version multiplies a base grid by theta with a batched matrix product; for 2x3 thetas on
small images that is a cuBLAS call of tens of microseconds forward and another backward, where
three broadcast multiply-adds take a few. On a GPU this job's step is made of such small kernels,
so it matters there; on a CPU it is no slower.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def _pixel_centres(count: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Normalised coordinates of ``count`` pixel centres in [-1, 1] (align_corners=False); made once,
    outside any graph capture, since the first step of a run is eager."""
    return (torch.arange(count, device=device, dtype=dtype) * 2 + 1) / count - 1


def affine_grid(theta: torch.Tensor, size) -> torch.Tensor:
    """Sampling grid (N, H, W, 2) for 2D affine ``theta`` (N, 2, 3) and output ``size`` (N, C, H, W)."""
    height, width = size[-2], size[-1]
    compiling = getattr(torch.compiler, "is_compiling", lambda: False)()
    centres = _pixel_centres.__wrapped__ if compiling else _pixel_centres  # Dynamo warns on a cached call
    x = centres(width, theta.device, theta.dtype).view(1, 1, width, 1)
    y = centres(height, theta.device, theta.dtype).view(1, height, 1, 1)
    row_x, row_y, shift = (theta[:, None, None, :, column] for column in range(3))  # each (N, 1, 1, 2)
    return x * row_x + y * row_y + shift
