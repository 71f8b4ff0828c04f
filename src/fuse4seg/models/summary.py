"""Model size and cost: parameters and MFLOPs per input.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` on a forward pass:
convolutions, matmuls, linear layers and scaled-dot-product attention (``QK^T`` and ``AV``),
with **1 multiply-accumulate (MAC) = 2 FLOPs**; element-wise operations (norms, activations,
softmax) are not counted. PyTorch has no FLOP formula for the CPU flash-attention kernel, so
one is supplied here (the same formula PyTorch uses for the CUDA kernels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

__all__ = ["count_parameters", "count_flops", "model_summary"]


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_EXTRA_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Forward FLOPs (1 MAC = 2 FLOPs) for a random input of ``input_shape``,
    e.g. ``(1, 2, 240, 240)``, on the model's device and dtype."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    x = torch.rand(tuple(input_shape), device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with (
            torch.no_grad(),
            FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter,
        ):
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def model_summary(model: nn.Module, input_shape: Sequence[int]) -> str:
    """One line: ``"<Class>: 123,456 parameters, 789.0 MFLOPs per (1, 2, 240, 240) input
    (1 MAC = 2 FLOPs)"``."""
    params = count_parameters(model)
    mflops = count_flops(model, input_shape) / 1e6
    shape = tuple(int(s) for s in input_shape)
    return (
        f"{type(model).__name__}: {params:,} parameters, {mflops:,.1f} MFLOPs per {shape} input "
        "(1 MAC = 2 FLOPs)"
    )
