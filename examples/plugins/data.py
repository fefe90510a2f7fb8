"""A dataset and an augmentation of your own, written with torch alone (no snnrun import).

``Digits8`` is scikit-learn's 1797 real 8x8 handwritten digits at their native resolution,
``[1, 8, 8]`` pixels in [0, 1] (snnrun's built-in ``digits`` upsamples them to 28x28); no
download. Pick it with ``dataset=digits8`` (``conf/dataset/digits8.yaml``) or inline with
``dataset._target_=plugins.data.Digits8``. ``Jitter`` shifts each training image by up to
``pixels`` in each direction (``augment=jitter``, ``conf/augment/jitter.yaml``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


class Images(Dataset):
    """``(x [1, 8, 8] float32, y int)`` pairs; ``targets`` lets snnrun read the labels without
    loading the images (for ``dataset.val_fraction``)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.targets[i])


class Digits8:
    """The dataset protocol (``snnrun.core.protocols.DatasetSplits``): ``train``, ``test``,
    ``sample_shape``, ``num_classes``, and ``class_names``. ``test_fraction`` of each class
    (chosen by a permutation seeded with ``seed``) is the test split."""

    sample_shape = (1, 8, 8)
    num_classes = 10
    class_names = NAMES

    def __init__(self, test_fraction: float = 0.2, seed: int = 0) -> None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.tensor(bunch.target, dtype=torch.long)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        test = torch.zeros(len(labels), dtype=torch.bool)
        for c in range(self.num_classes):
            members = order[labels[order] == c]
            test[members[: round(test_fraction * len(members))]] = True
        self.train = Images(images[~test], labels[~test])
        self.test = Images(images[test], labels[test])


class Jitter:
    """The augment protocol: ``augment(x [N, C, H, W], seeds [N]) -> [N, C, H, W]``. Each image
    is shifted by ``(dy, dx)`` uniform in ``[-pixels, pixels]``, zero-filled, drawn from its own
    generator seeded by ``seeds[i]``, so a resumed run draws what an unbroken one does."""

    def __init__(self, pixels: int = 1) -> None:
        self.pixels = pixels

    def __call__(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        p = self.pixels
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        out = torch.empty_like(x)
        H, W = x.shape[-2:]
        for n, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(seed)
            i, j = torch.randint(0, 2 * p + 1, (2,), generator=g).tolist()
            out[n] = padded[n, :, i : i + H, j : j + W]
        return out
