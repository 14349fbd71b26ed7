"""Distorted-MNIST generators of the STN paper (Jaderberg et al. 2015, section 4.1).

Every distortion takes a batch of 28x28 digits in [0, 1], shape (B, 1, 28, 28),
already on the training device, and builds one sampling grid for the whole
batch; a single ``grid_sample`` call then draws all the distorted images (TC's
clutter pieces are integer crops, so they are gathered and max-scattered
instead). Nothing loops over images in Python, so this runs on the GPU at the
speed of the model itself.

The random numbers come from a ``CounterRandom`` (stn/rng.py) that the caller
keys and sets to a step, so a batch is a pure function of (images, kind, key,
step): the training loop keys it with (seed, rank) and steps it with the
training step, the test set with (seed, "test") and its chunk. Nothing reads a
number back to the host, so a distortion can run inside a captured CUDA graph.

Ranges (R, RTS, TC follow the paper; P and E parameters are this job's choice,
the paper does not pin them down in the main text):

* ``none``  identity, 28x28.
* ``R``     rotation uniform in [-90, 90] degrees, 28x28.
* ``RTS``   rotation in [-45, 45] degrees, scale in [0.7, 1.2], digit placed
            at a random position on a 42x42 canvas (the scaled 28x28 box stays
            inside the canvas).
* ``P``     projective: each image corner moved by N(0, 4 px) per axis
            (clamped to 2 sigma), 28x28.
* ``E``     elastic (Simard et al. 2003): uniform displacement noise smoothed
            by a Gaussian of sigma 4 px and scaled by alpha 34 px, 28x28.
* ``TC``    digit at a random integer position on a 60x60 canvas plus six
            6x6 crops (from the central 20x20, where the strokes are) of other
            digits of the batch at random positions.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .geometry import affine_grid
from .rng import CounterRandom

DIGIT_SIZE = 28
KINDS = ("none", "R", "RTS", "P", "E", "TC")
CANVAS_SIZE = {"none": 28, "R": 28, "RTS": 42, "P": 28, "E": 28, "TC": 60}

R_MAX_DEGREES = 90.0
RTS_MAX_DEGREES = 45.0
RTS_SCALE_RANGE = (0.7, 1.2)
P_CORNER_SIGMA_PX = 4.0
E_SIGMA_PX = 4.0
E_ALPHA_PX = 34.0
TC_CLUTTER_PIECES = 6
TC_CLUTTER_SIZE = 6
TC_CROP_MARGIN = 4  # MNIST strokes live in the central 20x20; crops from the border are blank


@dataclass
class Distorted:
    """A distorted batch and the parameters that produced it (for tests and plots)."""

    images: torch.Tensor
    params: dict[str, torch.Tensor]


def canvas_size(kind: str) -> int:
    """Side of the square images that distortion ``kind`` produces."""
    return CANVAS_SIZE[kind]


def distort(images: torch.Tensor, kind: str, rng: CounterRandom) -> Distorted:
    """Apply distortion ``kind`` to a (B, 1, 28, 28) float batch in [0, 1]."""
    if kind not in CANVAS_SIZE:
        raise ValueError(f"unknown distortion {kind!r}; expected one of {KINDS}")
    images = images.float()
    if kind == "none":
        return Distorted(images, {})
    return _DISTORTIONS[kind](images, rng)


def _uniform(n: int, low: float, high: float, g: CounterRandom) -> torch.Tensor:
    return low + (high - low) * g.rand(n)


def _sample(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _similarity_theta(angle_deg, scale, shift_px, canvas: int) -> torch.Tensor:
    """Affine theta (B, 2, 3) mapping canvas coordinates back to the 28x28 digit.

    The digit is rotated by ``angle_deg``, scaled by ``scale`` and its centre
    moved by ``shift_px`` (B, 2) pixels from the canvas centre.
    """
    angle = torch.deg2rad(angle_deg)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # affine_grid normalises each image to [-1, 1]; canvas and digit differ in size.
    zoom = (canvas / DIGIT_SIZE) / scale
    linear = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    linear = linear * zoom[:, None, None]
    shift = shift_px / (canvas / 2)
    bias = -(linear * shift[:, None, :]).sum(-1, keepdim=True)  # linear @ shift, without a batched GEMM
    return torch.cat([linear, bias], dim=2)


def _rotate(images, g) -> Distorted:
    n = images.shape[0]
    angle = _uniform(n, -R_MAX_DEGREES, R_MAX_DEGREES, g)
    ones = torch.ones_like(angle)
    theta = _similarity_theta(angle, ones, torch.zeros(n, 2, device=images.device), DIGIT_SIZE)
    grid = affine_grid(theta, (n, 1, DIGIT_SIZE, DIGIT_SIZE))
    return Distorted(_sample(images, grid), {"angle": angle})


def _rotate_translate_scale(images, g) -> Distorted:
    n, canvas = images.shape[0], CANVAS_SIZE["RTS"]
    angle = _uniform(n, -RTS_MAX_DEGREES, RTS_MAX_DEGREES, g)
    scale = _uniform(n, *RTS_SCALE_RANGE, g)
    room = (canvas - DIGIT_SIZE * scale) / 2  # the scaled digit box stays on the canvas
    shift = (g.rand(n, 2) * 2 - 1) * room[:, None]
    theta = _similarity_theta(angle, scale, shift, canvas)
    grid = affine_grid(theta, (n, 1, canvas, canvas))
    return Distorted(_sample(images, grid), {"angle": angle, "scale": scale, "shift_px": shift})


def _homographies(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Batched 3x3 homographies H with H @ src_i ~ dst_i for 4 point pairs (B, 4, 2)."""
    x, y = src.unbind(-1)
    u, v = dst.unbind(-1)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -x * u, -y * u], -1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -x * v, -y * v], -1)
    system = torch.cat([rows_u, rows_v], dim=1)  # (B, 8, 8)
    h = torch.linalg.solve_ex(system, torch.cat([u, v], dim=1)).result  # _ex: no host check for singularity
    return torch.cat([h, one[:, :1]], dim=1).view(-1, 3, 3)


def _identity_grid(n: int, size: int, device) -> torch.Tensor:
    eye = torch.eye(2, 3, device=device).expand(n, 2, 3)
    return affine_grid(eye, (n, 1, size, size))


@functools.cache
def _unit_corners(device) -> torch.Tensor:
    """Made once per device: copying a constant from the host is not allowed inside a CUDA graph."""
    return torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], device=device)


def _projective(images, g) -> Distorted:
    n, device = images.shape[0], images.device
    corners = _unit_corners(device)
    sigma = P_CORNER_SIGMA_PX / (DIGIT_SIZE / 2)
    jitter = (g.randn(n, 4, 2) * sigma).clamp(-2 * sigma, 2 * sigma)
    # The grid maps output pixels back to the source, so solve moved -> original corners.
    h = _homographies(corners + jitter, corners.expand(n, 4, 2))
    base = _identity_grid(n, DIGIT_SIZE, device)
    homogeneous = torch.cat([base, torch.ones_like(base[..., :1])], dim=-1)
    mapped = torch.einsum("bij,bhwj->bhwi", h, homogeneous)
    grid = mapped[..., :2] / mapped[..., 2:]
    return Distorted(_sample(images, grid), {"corner_shift_px": jitter * (DIGIT_SIZE / 2)})


def _gaussian_kernel(sigma: float, device) -> torch.Tensor:
    radius = int(math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def _elastic(images, g) -> Distorted:
    n, device, size = images.shape[0], images.device, DIGIT_SIZE
    noise = g.rand(n * 2, 1, size, size) * 2 - 1
    kernel = _gaussian_kernel(E_SIGMA_PX, device)
    pad = kernel.numel() // 2
    smooth = F.conv2d(noise, kernel.view(1, 1, 1, -1), padding=(0, pad))
    smooth = F.conv2d(smooth, kernel.view(1, 1, -1, 1), padding=(pad, 0))
    displacement_px = (smooth * E_ALPHA_PX).view(n, 2, size, size).permute(0, 2, 3, 1)
    grid = _identity_grid(n, size, device) + displacement_px / (size / 2)
    return Distorted(_sample(images, grid), {"displacement_px": displacement_px})


def _translation_theta(offset_px: torch.Tensor, canvas: int, source: int) -> torch.Tensor:
    """Theta that copies a source image to integer ``offset_px`` (top-left, (B, 2)) on a canvas.

    With integer offsets every canvas pixel centre lands on a source pixel
    centre, so bilinear sampling copies pixels exactly (no blur).
    """
    n = offset_px.shape[0]
    theta = torch.zeros(n, 2, 3, device=offset_px.device)
    theta[:, 0, 0] = theta[:, 1, 1] = canvas / source
    theta[:, :, 2] = (canvas - source - 2 * offset_px) / source
    return theta


def _translate_clutter(images, g) -> Distorted:
    n, device = images.shape[0], images.device
    canvas, piece, pieces = CANVAS_SIZE["TC"], TC_CLUTTER_SIZE, TC_CLUTTER_PIECES

    digit_at = g.randint(canvas - DIGIT_SIZE, n, 2).float()
    theta = _translation_theta(digit_at, canvas, DIGIT_SIZE)
    digits = _sample(images, affine_grid(theta, (n, 1, canvas, canvas)))

    # Clutter: 6x6 crops of *other* images of the batch (shifted index, never itself unless B=1),
    # copied with integer gathers and max-scattered onto the canvas.
    other = (torch.arange(n, device=device)[:, None] + 1 + g.randint(max(n - 2, 0), n, pieces)) % n
    crop_from = TC_CROP_MARGIN + g.randint(DIGIT_SIZE - 2 * TC_CROP_MARGIN - piece, n, pieces, 2)
    paste_at = g.randint(canvas - piece, n, pieces, 2)
    dy, dx = torch.meshgrid(torch.arange(piece, device=device), torch.arange(piece, device=device), indexing="ij")
    dy, dx = dy.reshape(-1), dx.reshape(-1)

    def flat_index(top_left, width):  # (n, pieces, 2) -> (n, pieces * piece * piece)
        x, y = top_left[..., :1], top_left[..., 1:]
        return ((y + dy) * width + x + dx).view(n, -1)

    sources = images.view(n, -1)[other.view(-1)].view(n, pieces * DIGIT_SIZE * DIGIT_SIZE)
    offsets = torch.arange(pieces, device=device).repeat_interleave(piece * piece) * DIGIT_SIZE * DIGIT_SIZE
    crops = sources.gather(1, flat_index(crop_from, DIGIT_SIZE) + offsets)
    clutter = torch.zeros(n, canvas * canvas, device=device, dtype=images.dtype)
    clutter.scatter_reduce_(1, flat_index(paste_at, canvas), crops, reduce="amax")
    clutter = clutter.view(n, 1, canvas, canvas)
    return Distorted(
        torch.maximum(digits, clutter),
        {"digit_at_px": digit_at, "clutter_at_px": paste_at, "clutter_source": other},
    )


_DISTORTIONS = {
    "R": _rotate,
    "RTS": _rotate_translate_scale,
    "P": _projective,
    "E": _elastic,
    "TC": _translate_clutter,
}
