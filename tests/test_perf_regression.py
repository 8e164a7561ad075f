"""Performance regression tests: counts and ratios, never absolute times.

CPU tier (always, the kernels under ``TRITON_INTERPRET=1`` when there is no GPU): one Triton
launch per LIF forward and one per backward, whatever the options — the whole point of the fused
neuron is that T steps cost one kernel each way. Launches are counted by wrapping the ``run``
method of the kernels' launcher class (``JITFunction`` compiled, ``InterpretedFunction`` under the
interpreter); ``kernel[grid](...)`` goes through it.

GPU tier (``gpu``): the fused forward+backward is at least 10× faster than the eager reference at
T = 4, N = 2**24, and reaches at least 70% of the copy bandwidth measured in the same process at
large N in bf16. The timing and the bytes model are those of ``perf/bench_neuron.py``.

Not here (covered elsewhere in the suite): bytes saved for backward per element-step
(``tests/test_saved_bytes.py``) and vectorised, spill-free PTX (``tests/test_kernel_aot.py``).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def launches(monkeypatch):
    """Counter of Triton launches from ``asgl.kernels.lif``, keyed by kernel name."""
    import triton

    import asgl.kernels.lif as lif_module

    kernels = {id(v): name for name, v in vars(lif_module).items() if isinstance(v, triton.runtime.KernelInterface)}
    assert kernels, "asgl.kernels.lif defines no Triton kernels"
    counts: Counter = Counter()
    classes = {type(v) for v in vars(lif_module).values() if isinstance(v, triton.runtime.KernelInterface)}
    for cls in classes:
        original = cls.run

        def run(self, *args, _original=original, **kwargs):
            if id(self) in kernels and not kwargs.get("warmup", False):
                counts[kernels[id(self)]] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "run", run)
    return counts


def _inputs(device, *, channels: bool, requires_grad: bool = True):
    # T = 5 (odd, not a power of two), B·C·L = 2·3·7 = 42 neurons: ragged against the block size
    x = (torch.randn(5, 2, 3, 7, device=device) * 0.8 + 0.4).requires_grad_(requires_grad)
    decay_logit = torch.tensor(0.0, device=device, requires_grad=True)
    width_param = torch.full((3,) if channels else (), 4.0, device=device, requires_grad=True)
    return x, decay_logit, width_param


@pytest.mark.interpret
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("channels", [False, True])
@pytest.mark.parametrize("surrogate,reset", [("sigmoid", "hard"), ("rectangle", "soft")])
def test_one_launch_per_forward_and_per_backward(launches, device, p, channels, surrogate, reset):
    from asgl.kernels.lif import lif_fused

    x, decay_logit, width_param = _inputs(device, channels=channels)
    kwargs = dict(reset=reset, v_reset=0.0, surrogate=surrogate, p=p, training=True, seed=7)
    # the first call may compile or autotune: count from the second on
    lif_fused(x, decay_logit, width_param, 1.0, **kwargs).sum().backward()
    launches.clear()

    y = lif_fused(x, decay_logit, width_param, 1.0, **kwargs)
    fwd = dict(launches)
    launches.clear()
    y.backward(torch.ones_like(y))
    bwd = dict(launches)

    assert sum(fwd.values()) == 1, f"forward launched {fwd}"
    assert sum(bwd.values()) == 1, f"backward launched {bwd}"
    assert set(fwd) != set(bwd), "forward and backward launched the same kernel"
    assert x.grad is not None and decay_logit.grad is not None and width_param.grad is not None


@pytest.mark.interpret
def test_one_launch_in_eval(launches, device):
    from asgl.kernels.lif import lif_fused

    x, decay_logit, width_param = _inputs(device, channels=False, requires_grad=False)
    with torch.no_grad():
        lif_fused(x, decay_logit, width_param, 1.0, training=False, seed=0)
        launches.clear()
        lif_fused(x, decay_logit, width_param, 1.0, training=False, seed=0)
    assert sum(launches.values()) == 1, f"eval forward launched {dict(launches)}"


# ---------------------------------------------------------------------------------------------
# GPU tier: ratios against baselines measured in the same process
# ---------------------------------------------------------------------------------------------


def _fused_and_eager(device):
    from perf import bench_neuron as bn

    params = bn.make_params(device)
    fused, _ = bn.make_path("fused", device=device, p=0.0, T=0, compile_max_t=0, params=params)
    eager, _ = bn.make_path("eager", device=device, p=0.0, T=0, compile_max_t=0, params=params)
    return bn, params, fused, eager


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_fused_fwd_bwd_at_least_10x_eager(dtype):
    device = "cuda"
    bn, params, fused, eager = _fused_and_eager(device)
    T, N = 4, 2**24
    x = bn.make_input(T, N, dtype, device)
    dy = torch.randn(T, N, device=device, dtype=dtype)
    ms_fused = bn.time_pass(fused, x, dy, params, "fwd+bwd", device)
    ms_eager = bn.time_pass(eager, x, dy, params, "fwd+bwd", device)
    ratio = ms_eager / ms_fused
    assert ratio >= 10.0, f"fused fwd+bwd only {ratio:.2f}× the eager reference ({ms_fused:.3f} vs {ms_eager:.3f} ms)"


@pytest.mark.gpu
def test_fused_fwd_bwd_at_least_70pct_of_copy_bandwidth_bf16():
    from perf.common import copy_bandwidth, gbps

    device = "cuda"
    bn, params, fused, _ = _fused_and_eager(device)
    T, N, dtype = 8, 2**24, torch.bfloat16
    x = bn.make_input(T, N, dtype, device)
    dy = torch.randn(T, N, device=device, dtype=dtype)
    total, extra = bn.saved_bytes(fused, x)
    s = x.element_size()
    units = {"fwd": 2 + extra / (T * N * s), "bwd": 2 + total / (T * N * s)}
    nbytes = bn.bytes_model(units, T, N, s)["fwd+bwd"]
    ms = bn.time_pass(fused, x, dy, params, "fwd+bwd", device)
    _, copy_gbps = copy_bandwidth(T * N, dtype, device)
    frac = gbps(nbytes, ms) / copy_gbps
    assert frac >= 0.70, f"fused fwd+bwd at {100 * frac:.1f}% of copy bandwidth ({gbps(nbytes, ms):.0f} GB/s)"
