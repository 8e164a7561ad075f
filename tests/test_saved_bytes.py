"""Bytes kept for the backward per element per time step: the fused op against the reference.

Measured with ``torch.autograd.graph.saved_tensors_hooks`` over one training forward (p = 0.3,
every parameter learnable), counting each distinct storage once and leaving out the parameters
(at most C elements). The fused op keeps one ``[T, N]`` tensor (u) in the input dtype; the
reference loop keeps several per step (printed, for the record: run with ``-s``).
"""

from __future__ import annotations

import pytest
import torch

from asgl.kernels.lif import lif_fused
from asgl.kernels.lif_ref import lif_ref

T, B, C, L = 4, 2, 3, 53


def saved_bytes_per_element_step(fn, x):
    storages = {}

    def pack(t):
        if t.numel() > C:  # parameters and scalars aside
            s = t.untyped_storage()
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values()) / x.numel()


@pytest.mark.interpret
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_saved_bytes(dtype, device):
    x = (0.4 + 0.6 * torch.randn(T, B, C, L)).to(dtype).to(device).requires_grad_()
    decay_logit = torch.tensor(0.2, device=device, requires_grad=True)
    width_param = torch.full((C,), 1.3, device=device, requires_grad=True)
    thresh = torch.tensor(1.0, device=device, requires_grad=True)
    args = (x, decay_logit, width_param, thresh)
    fused = saved_bytes_per_element_step(lambda: lif_fused(*args, p=0.3, seed=1), x)
    ref = saved_bytes_per_element_step(lambda: lif_ref(*args, p=0.3), x)
    print(f"\nsaved for backward, bytes per element-step, {dtype}: fused {fused:.2f}, reference {ref:.2f}")
    assert fused <= x.element_size()
    assert fused > 0  # it does save u
    assert ref > fused
