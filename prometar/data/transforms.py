"""Image transforms of the official run (docs/algorithm.md §5), sized by the backbone.

Train: random resized crop (scale 0.08-1, bicubic), horizontal flip, tensor, normalise.
Test: resize the short side (bicubic), centre crop, tensor, normalise. Size, mean and std come
from the backbone (``Backbone.image_size``, ``.mean``, ``.std``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

TRAIN_CROP_SCALE = (0.08, 1.0)


def build_train_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """Training transform: RandomResizedCrop(scale 0.08-1, bicubic) + flip + ToTensor + Normalize.

    Args:
        image_size: Output side in pixels.
        mean: Per-channel normalisation mean (RGB).
        std: Per-channel normalisation std (RGB).
    """
    _check(image_size, mean, std)
    return T.Compose(
        [
            T.RandomResizedCrop(image_size, scale=TRAIN_CROP_SCALE, interpolation=InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean=tuple(mean), std=tuple(std)),
        ]
    )


def build_test_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """Test transform: Resize(short side, bicubic) + CenterCrop + ToTensor + Normalize.

    Args:
        image_size: Output side in pixels.
        mean: Per-channel normalisation mean (RGB).
        std: Per-channel normalisation std (RGB).
    """
    _check(image_size, mean, std)
    return T.Compose(
        [
            T.Resize(image_size, interpolation=InterpolationMode.BICUBIC),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(mean=tuple(mean), std=tuple(std)),
        ]
    )


def _check(image_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 channels, got mean={tuple(mean)} std={tuple(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive, got {tuple(std)}")
