"""Frame-order classes: a permutation and its reverse are one class.

The order pretext (Jiao et al., ISBI 2020 and MICCAI 2020, after Lee et al., ICCV 2017) shuffles
the n frames of a clip and classifies the permutation. A clip played backwards looks as plausible
as forwards (a probe sweep can go either way), so a permutation and its reverse share a class:
n!/2 classes, 12 for the papers' 4 frames. Class k's representative is the lexicographically
smaller of the pair, classes numbered in lexicographic order of representatives (class 0 is the
identity and its reverse).

    >>> order_label((2, 3, 1, 0)), order_label((0, 1, 3, 2))
    (1, 1)
    >>> perms, labels = sample_orders(8, 4)            # (8, 4) long, (8,) long in [0, 12)
"""

from __future__ import annotations

from functools import lru_cache
from itertools import permutations
from typing import Sequence

import numpy as np
import torch


@lru_cache(maxsize=None)
def order_classes(n_frames: int = 4) -> tuple[tuple[int, ...], ...]:
    """The n!/2 class representatives, each the smaller of a permutation and its reverse."""
    if n_frames < 2:
        raise ValueError(f"order classes need at least 2 frames, got {n_frames}")
    return tuple(p for p in permutations(range(n_frames)) if p < p[::-1])


@lru_cache(maxsize=None)
def _label_of(n_frames: int) -> dict[tuple[int, ...], int]:
    table = {}
    for k, p in enumerate(order_classes(n_frames)):
        table[p] = table[p[::-1]] = k
    return table


def order_label(perm: Sequence[int]) -> int:
    """Class index of ``perm`` (a permutation of 0..n−1) in ``order_classes(n)``."""
    key = tuple(int(i) for i in perm)
    if sorted(key) != list(range(len(key))):
        raise ValueError(f"{list(key)} is not a permutation of 0..{len(key) - 1}")
    return _label_of(len(key))[key]


def permutation_for(label: int, rng: np.random.Generator | torch.Generator | None = None,
                    n_frames: int = 4) -> tuple[int, ...]:
    """One of the two permutations of class ``label``, the reverse with probability 1/2."""
    classes = order_classes(n_frames)
    if not 0 <= label < len(classes):
        raise ValueError(f"order label must be in [0, {len(classes)}), got {label}")
    if isinstance(rng, np.random.Generator):
        flip = bool(rng.integers(2))
    else:
        flip = bool(torch.randint(2, (1,), generator=rng).item())
    perm = classes[label]
    return perm[::-1] if flip else perm


def sample_orders(batch: int, n_frames: int = 4, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform classes, then either member of each class.

    Returns:
        perms: (batch, n_frames) long, row b lists the source frame of each output position.
        labels: (batch,) long class indices.
    """
    table = torch.tensor(order_classes(n_frames), dtype=torch.long)  # (n!/2, n)
    labels = torch.randint(len(table), (batch,), generator=generator)
    flip = torch.rand(batch, generator=generator) < 0.5
    perms = table[labels]  # (B, n)
    perms = torch.where(flip[:, None], perms.flip(1), perms)
    return perms.to(device), labels.to(device)


def shuffle_frames(video: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """video: (B, C, T, H, W), perms: (B, T) → frames reordered, out[:, :, t] = video[:, :, perms[:, t]]."""
    b, c, t, h, w = video.shape
    index = perms.view(b, 1, t, 1, 1).expand(b, c, t, h, w)
    return torch.gather(video, 2, index)
