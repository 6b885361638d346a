"""Linear layers that, while decoding, multiply in the orientation the CPU's GEMM is fastest in.

Decoding runs every projection on a few rows (the batch, one token each). For such a product
``x W^T`` with ``x`` `(M, K)`, M small, the CPU's BLAS is up to twice as fast computed as
``(W x^T)^T``, with the weight as the left operand (measured on GPT-2 small at batch 8: its
vocabulary head 18 -> 9 ms, the other projections 28 -> 24 ms a step). A single row would take
the vector kernel, which runs on one thread: it is multiplied as two copies of itself, which
takes the threaded matrix kernel (at batch 1: the head 9.2 -> 3.4 ms, the projections 19.2 ->
10.0 ms on 2 threads). The product is the same; only its summation order, and so its last bits,
may differ.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: rows up to which a decoding multiplies weight-first (beyond it the usual order is as fast)
FEW_ROWS = 16


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, weight_first: bool) -> Tensor:
    """``x @ weight^T + bias``; with ``weight_first``, on the CPU and at most ``FEW_ROWS``
    rows, computed as ``(weight @ x^T)^T``. Shape: x `(..., K)`, weight `(N, K)` -> `(..., N)`."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if not weight_first or x.device.type != "cpu" or not 0 < rows <= FEW_ROWS:
        return torch.nn.functional.linear(x, weight, bias)
    flat = x.reshape(rows, x.shape[-1])
    if rows == 1:  # one row takes the single-threaded vector kernel; two take the matrix one
        flat = flat.repeat(2, 1)
    flat = flat.t()  # (K, M)
    out = weight @ flat if bias is None else torch.addmm(bias[:, None], weight, flat)  # (N, M)
    return out[:, :rows].t().contiguous().view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (the same parameters and state dict) whose ``weight_first`` a decoding
    sets (``compiler.decoding``), so its few-row products run weight-first (``linear``)."""

    weight_first = False

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias, self.weight_first)


__all__ = ["FEW_ROWS", "Linear", "linear"]
