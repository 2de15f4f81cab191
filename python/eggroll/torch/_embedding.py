"""The perturbed embedding lookup as a PyTorch custom op (``torch.ops.eggroll.perturbed_embedding``):
the CPU kernel (the core's ``perturbed_embedding`` on zero-copy views), a fake implementation
for torch.compile, and the autograd rule for W. docs/ops.md states the contract."""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from .. import _core
from ._ops import NS, _args, _check, _cuda, _mview, _stream, view
from ._threads import on_torch_threads

_IDS = (torch.int64, torch.int32)


def _checks(ids: Tensor, W: Tensor, members: Optional[Tensor]) -> None:
    if ids.dtype not in _IDS:
        raise TypeError(f"ids: expected dtype torch.int64 or torch.int32, got {ids.dtype}")
    if ids.device != W.device:
        raise ValueError(f"ids: expected a tensor on {W.device}, got {ids.device}")
    _check(W, "W", (torch.float32,), W.device)
    if members is not None:
        _check(members, "members", (torch.int64,), W.device)


@torch.library.custom_op(f"{NS}::perturbed_embedding", mutates_args=(), device_types="cpu")
def perturbed_embedding(ids: Tensor, W: Tensor, members: Optional[Tensor], seed_lo: int,
                        seed_hi: int, param_id: int, epoch: int, noise_reuse: int,
                        antithetic: bool, sigma: float, rank: int) -> Tensor:
    """ids int64/int32 [M, T] (rows contiguous; stride 0 on axis 0 = shared by all members),
    W float32 [V, d], members int64 [M] or None -> float32 [M, T, d]: row t of member i's
    table W + A_i B_i^T (the low-rank noise of shape (V, d))."""
    _checks(ids, W, members)
    args = _args(seed_lo, seed_hi, param_id, epoch, noise_reuse, antithetic, sigma, rank)
    out = W.new_empty((ids.shape[0], ids.shape[1], W.shape[1]))
    with on_torch_threads():
        _core.perturbed_embedding(view(ids), view(W), _mview(members), args, view(out))
    return out


@perturbed_embedding.register_kernel("cuda")
def _perturbed_embedding_cuda(ids: Tensor, W: Tensor, members: Optional[Tensor], seed_lo: int,
                              seed_hi: int, param_id: int, epoch: int, noise_reuse: int,
                              antithetic: bool, sigma: float, rank: int) -> Tensor:
    cuda = _cuda()
    _checks(ids, W, members)
    args = _args(seed_lo, seed_hi, param_id, epoch, noise_reuse, antithetic, sigma, rank)
    out = W.new_empty((ids.shape[0], ids.shape[1], W.shape[1]))
    cuda.perturbed_embedding(view(ids), view(W), _mview(members), args, view(out),
                             stream=_stream(W))
    return out


@perturbed_embedding.register_fake
def _perturbed_embedding_fake(ids: Tensor, W: Tensor, members: Optional[Tensor], seed_lo: int,
                              seed_hi: int, param_id: int, epoch: int, noise_reuse: int,
                              antithetic: bool, sigma: float, rank: int) -> Tensor:
    return W.new_empty((ids.shape[0], ids.shape[1], W.shape[1]))


def _setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
    ids, W = inputs[0], inputs[1]
    ctx.save_for_backward(ids)
    ctx.table_shape = tuple(W.shape)


def _backward(ctx: Any, grad: Tensor) -> tuple:
    """The noise does not depend on W: dL/dW[t] = sum of the gradients of the rows that read
    row t (what nn.Embedding's backward computes)."""
    (ids,) = ctx.saved_tensors
    gW = None
    if ctx.needs_input_grad[1]:
        d = ctx.table_shape[1]
        rows = ids.expand(grad.shape[0], ids.shape[1]).reshape(-1)
        gW = grad.new_zeros(ctx.table_shape).index_add_(0, rows, grad.reshape(-1, d))
    return (None, gW) + (None,) * 9


perturbed_embedding.register_autograd(_backward, setup_context=_setup)
