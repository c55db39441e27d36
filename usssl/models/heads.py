"""The one MLP builder behind every projection, classification and pretext head.

``mlp(in_dim, hidden_dim, out_dim, layers=1, batch_norm=True)`` is ``layers`` hidden blocks of
[Linear, (BatchNorm1d), ReLU] followed by a Linear to ``out_dim`` (or no output layer when
``out_dim`` is None). The layer order, and so the parameter names and the random initialisation
sequence, is the same for every head that uses it:

- CVRL's projection head (Qian et al., CVPR 2021): ``mlp(D, 2048, 128, layers=3)``;
- a SimCLR-style projection without normalisation: ``mlp(D, D, 128, batch_norm=False)``;
- a pretext branch without an output layer: ``mlp(D, 256)``.

    >>> head = mlp(64, 64, 2, batch_norm=False)   # Linear, ReLU, Linear: (B, 64) -> (B, 2)
"""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int | None = None, layers: int = 1,
        batch_norm: bool = True) -> nn.Sequential:
    """(B, in_dim) → (B, out_dim) (or (B, hidden_dim) without an output layer).

    Args:
        in_dim: input features.
        hidden_dim: width of each hidden block.
        out_dim: width of the final Linear; None: no final Linear (the last hidden block is the output).
        layers: hidden [Linear, BN, ReLU] blocks; 0 with ``out_dim``: one Linear(in_dim, out_dim).
        batch_norm: put a BatchNorm1d between each hidden Linear and its ReLU.
    """
    if layers < 0 or (layers == 0 and out_dim is None):
        raise ValueError(f"an MLP needs layers >= 1, or layers 0 with an output layer (got {layers}, {out_dim})")
    blocks: list[nn.Module] = []
    for i in range(layers):
        blocks.append(nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim))
        if batch_norm:
            blocks.append(nn.BatchNorm1d(hidden_dim))
        blocks.append(nn.ReLU(inplace=True))
    if out_dim is not None:
        blocks.append(nn.Linear(hidden_dim if layers else in_dim, out_dim))
    return nn.Sequential(*blocks)
