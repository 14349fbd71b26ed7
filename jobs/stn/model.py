"""The four networks of the paper's distorted-MNIST table: FCN, CNN, ST-FCN, ST-CNN.

All four take a (B, 1, S, S) image in [0, 1] and return (B, 10) logits, where
S is the canvas size of the distortion (28, 42 or 60). As in the paper they
have roughly the same number of parameters: the ST-CNN sets the budget and the
other three choose their hidden width to match it (``parameter_count``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import affine_grid

NUM_CLASSES = 10
MODELS = ("stcnn", "cnn", "fcn", "stfcn")
IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CNN_CHANNELS = (16, 32)
STCNN_HIDDEN = 64
LOCALISATION_HIDDEN = 32


class SpatialTransformer(nn.Module):
    """Affine spatial transformer: localisation net -> theta -> sampling grid -> bilinear sampler.

    The output has the input's size. The last regression layer starts at the
    identity transform (weight 0, bias [1, 0, 0, 0, 1, 0]) so that training
    starts from "leave the image alone" rather than from a random warp.
    """

    def __init__(self, localisation: nn.Module, features: int):
        super().__init__()
        self.localisation = localisation
        self.regress = nn.Linear(features, 6)
        nn.init.zeros_(self.regress.weight)
        with torch.no_grad():
            self.regress.bias.copy_(torch.tensor(IDENTITY_AFFINE))

    def theta(self, images: torch.Tensor) -> torch.Tensor:
        """Affine matrices (B, 2, 3) in fp32, whatever autocast did to the localisation net."""
        return self.regress(self.localisation(images)).float().view(-1, 2, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        theta = self.theta(images)
        # bf16 sampling coordinates are off by up to a pixel on a 60x60 canvas: keep the warp in fp32.
        with torch.autocast(images.device.type, enabled=False):
            grid = affine_grid(theta, images.shape)
            return F.grid_sample(images.float(), grid, align_corners=False)


class Classifier(nn.Module):
    """An optional spatial transformer in front of a classification head."""

    def __init__(self, head: nn.Module, transformer: SpatialTransformer | None = None):
        super().__init__()
        self.transformer = transformer
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.transformer is not None:
            images = self.transformer(images)
        return self.head(images)


def _conv_features(size: int) -> int:
    return CNN_CHANNELS[1] * (size // 4) ** 2


def conv_head(size: int, hidden: int) -> nn.Sequential:
    """Two 5x5 conv + 2x2 max-pool blocks, then one hidden fully connected layer."""
    c1, c2 = CNN_CHANNELS
    return nn.Sequential(
        nn.Conv2d(1, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(_conv_features(size), hidden), nn.ReLU(),
        nn.Linear(hidden, NUM_CLASSES),
    )


def fc_head(size: int, hidden: int) -> nn.Sequential:
    """Two hidden fully connected layers of width ``hidden``."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(size * size, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, NUM_CLASSES),
    )


def conv_localisation(size: int) -> tuple[nn.Module, int]:
    """The PyTorch-tutorial localisation net, sized for an S x S input."""
    side = ((size - 6) // 2 - 4) // 2
    net = nn.Sequential(
        nn.Conv2d(1, 8, 7), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(8, 10, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(10 * side * side, LOCALISATION_HIDDEN), nn.ReLU(),
    )
    return net, LOCALISATION_HIDDEN


def fc_localisation(size: int) -> tuple[nn.Module, int]:
    """A fully connected localisation net (ST-FCN)."""
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(size * size, LOCALISATION_HIDDEN), nn.ReLU(),
        nn.Linear(LOCALISATION_HIDDEN, LOCALISATION_HIDDEN), nn.ReLU(),
    )
    return net, LOCALISATION_HIDDEN


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _fc_head_params(size: int, hidden: int) -> int:
    return (size * size + 1) * hidden + (hidden + 1) * hidden + (hidden + 1) * NUM_CLASSES


def _conv_head_params(size: int, hidden: int) -> int:
    c1, c2 = CNN_CHANNELS
    convs = (25 + 1) * c1 + (25 * c1 + 1) * c2
    return convs + (_conv_features(size) + 1) * hidden + (hidden + 1) * NUM_CLASSES


def _width_for(params_of_width, budget: int) -> int:
    return min(range(8, 4097), key=lambda width: abs(params_of_width(width) - budget))


def build_model(name: str, size: int) -> Classifier:
    """Build ``name`` (one of MODELS) for S x S inputs with the ST-CNN's parameter budget."""
    localisation, features = conv_localisation(size)
    st_cnn = Classifier(conv_head(size, STCNN_HIDDEN), SpatialTransformer(localisation, features))
    budget = parameter_count(st_cnn)
    if name == "stcnn":
        return st_cnn
    if name == "cnn":
        return Classifier(conv_head(size, _width_for(lambda w: _conv_head_params(size, w), budget)))
    if name == "fcn":
        return Classifier(fc_head(size, _width_for(lambda w: _fc_head_params(size, w), budget)))
    if name == "stfcn":
        transformer = SpatialTransformer(*fc_localisation(size))
        rest = budget - parameter_count(transformer)
        return Classifier(fc_head(size, _width_for(lambda w: _fc_head_params(size, w), rest)), transformer)
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")
