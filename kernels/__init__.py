"""Triton kernels of the ASGL neuron and their plain-PyTorch references.

Only the references are imported here; the fused kernels live in ``asgl.kernels.lif`` (and
``asgl.kernels.bn_lif``, ``asgl.kernels.rlif``) and are imported on first use, so ``import asgl.kernels``
costs nothing and never touches a GPU.
"""

from .bn_lif_ref import bn_lif_ref
from .lif_ref import (
    RESETS,
    SURROGATES,
    lif_ref,
    lif_step_ref,
    relaxation_ref,
    slope_from_width_param,
    spike_mask_ref,
    width_param_from_width,
)
from .rlif_ref import recurrent_lif_ref

__all__ = [
    "RESETS",
    "SURROGATES",
    "bn_lif_ref",
    "lif_ref",
    "lif_step_ref",
    "recurrent_lif_ref",
    "relaxation_ref",
    "slope_from_width_param",
    "spike_mask_ref",
    "width_param_from_width",
]
