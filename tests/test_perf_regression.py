"""Performance regression tests: counts and ratios, never absolute times.

CPU tier (always, the kernels under ``TRITON_INTERPRET=1`` when there is no GPU): every kernel a
training step's neuron launches, whatever the options — one Triton launch forward; backward, the
backward kernel and one finalize kernel (plus one reduction for a channel-wise width) — and one
launch in eval; the fused batch norm + LIF unit's three launches each way (one in eval). The whole
point of the fused neuron is that T steps cost one kernel each way, and at a step time of
milliseconds every further small launch (4-6 µs from Python) shows.

GPU tier (``gpu``): the fused forward+backward is at least 10× faster than the eager reference at
T = 4, N = 2**24, and reaches at least 70% of the copy bandwidth measured in the same process at
large N in bf16, at p = 0 and at p = 0.2 (what the recipes train with; the static model's
prediction is printed beside the measured figure). The timing and the bytes model are those of ``perf/bench_neuron.py``.

Not here (covered elsewhere in the suite): bytes saved for backward per element-step
(``tests/test_saved_bytes.py``) and vectorised, spill-free PTX (``tests/test_kernel_aot.py``).
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
import torch


# aten ops that launch no kernel: allocation, views, metadata (``to`` counts only when it copies)
_NO_KERNEL = re.compile(
    r"^aten\.(empty|empty_like|empty_strided|new_empty|new_empty_strided|view|_unsafe_view|reshape|permute|"
    r"expand|as_strided|alias|detach|t|transpose|squeeze|unsqueeze|select|slice|lift_fresh|_reshape_alias|"
    r"sym_size|sym_stride|sym_numel|sym_storage_offset|is_same_size|size|stride|numel|dim|unbind)\b"
)


class _Launches:
    """Kernel launches of a region: Triton launches from ``asgl.kernels.lif`` by kernel name, and every
    other aten op dispatched outside them that would launch a kernel (allocations and views aside).
    Triton launches are counted by wrapping the ``run`` method of the kernels' launcher class
    (``JITFunction`` compiled, ``InterpretedFunction`` under the interpreter)."""

    def __init__(self):
        self.triton: Counter = Counter()
        self.aten: Counter = Counter()
        self.in_triton = False

    def clear(self):
        self.triton.clear()
        self.aten.clear()

    def snapshot(self):
        out = (dict(self.triton), dict(self.aten))
        self.clear()
        return out


def _record_launches(monkeypatch, module, launchers):
    """Yield a :class:`_Launches` counting the Triton kernels of ``module`` and every other aten op
    that launches a kernel, inside the ``launchers`` of ``module`` too."""
    import triton
    from torch.utils._python_dispatch import TorchDispatchMode

    kernels = {id(v): name for name, v in vars(module).items() if isinstance(v, triton.runtime.KernelInterface)}
    assert kernels, f"{module.__name__} defines no Triton kernels"
    record = _Launches()
    classes = {type(v) for v in vars(module).values() if isinstance(v, triton.runtime.KernelInterface)}
    for cls in classes:
        original = cls.run

        def run(self, *args, _original=original, **kwargs):
            if id(self) in kernels and not kwargs.get("warmup", False):
                record.triton[kernels[id(self)]] += 1
            record.in_triton = True
            try:
                return _original(self, *args, **kwargs)
            finally:
                record.in_triton = False

        monkeypatch.setattr(cls, "run", run)

    class Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = f"{func.namespace}.{func.overloadpacket.__name__}"
            out = func(*args, **(kwargs or {}))
            launches = not _NO_KERNEL.match(name) and (name != "aten.to" or out is not args[0])
            if func.namespace == "aten" and not record.in_triton and launches:
                record.aten[name] += 1
            return out

    # a mode is off while it handles an op, so the ops inside the custom ops' implementations are
    # seen by entering it again around the launchers they call
    for launcher in launchers:
        original = getattr(module, launcher)

        def inside(*args, _original=original, **kwargs):
            with Mode():
                return _original(*args, **kwargs)

        monkeypatch.setattr(module, launcher, inside)

    with Mode():
        yield record


@pytest.fixture
def launches(monkeypatch):
    import asgl.kernels.lif as lif_module

    yield from _record_launches(monkeypatch, lif_module, ("_launch_fwd", "_launch_bwd"))


@pytest.fixture
def bn_launches(monkeypatch):
    import asgl.kernels.bn_lif as bn_module

    yield from _record_launches(monkeypatch, bn_module, ("_launch_coef", "_launch_fwd", "_launch_bwd"))


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
def test_every_launch_of_a_training_forward_and_backward(launches, device, p, channels, surrogate, reset):
    """A training step's neuron: one launch forward; backward, the backward kernel and one finalize
    kernel (the parameter gradients' second stage and chain rule), plus, for a channel-wise width,
    the one reduction of the per-neuron width gradient over batch and positions. Nothing else: no
    copies, casts, fills or small arithmetic on the parameters."""
    from asgl.kernels.lif import lif_fused

    x, decay_logit, width_param = _inputs(device, channels=channels)
    thresh = torch.tensor(1.0, device=device, requires_grad=True)
    seed = torch.tensor([7], device=device)  # what asgl.functional.draw_seed hands over
    kwargs = dict(reset=reset, v_reset=0.0, surrogate=surrogate, p=p, training=True, seed=seed)
    params = (x, decay_logit, width_param, thresh)
    # the first call may compile: count from the second on
    torch.autograd.grad(lif_fused(x, decay_logit, width_param, thresh, **kwargs).sum(), params)
    launches.clear()

    y = lif_fused(x, decay_logit, width_param, thresh, **kwargs)
    fwd_triton, fwd_aten = launches.snapshot()
    dy = torch.ones_like(y)
    launches.clear()
    grads = torch.autograd.grad(y, params, dy)
    bwd_triton, bwd_aten = launches.snapshot()

    assert fwd_triton == {"_lif_fwd_kernel": 1} and not fwd_aten, f"forward launched {fwd_triton} {fwd_aten}"
    assert bwd_triton == {"_lif_bwd_kernel": 1, "_finalize_kernel": 1}, f"backward launched {bwd_triton}"
    assert sum(bwd_aten.values()) == (1 if channels else 0), f"backward launched aten ops {bwd_aten}"
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.interpret
def test_one_launch_in_eval(launches, device):
    from asgl.kernels.lif import lif_fused

    x, decay_logit, width_param = _inputs(device, channels=False, requires_grad=False)
    thresh = torch.tensor(1.0, device=device)
    with torch.no_grad():
        lif_fused(x, decay_logit, width_param, thresh, training=False, seed=torch.tensor([0], device=device))
        launches.clear()
        lif_fused(x, decay_logit, width_param, thresh, training=False, seed=torch.tensor([0], device=device))
    triton_launches, aten = launches.snapshot()
    assert triton_launches == {"_lif_fwd_kernel": 1} and not aten, f"eval forward launched {triton_launches} {aten}"


@pytest.mark.interpret
@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("channels", [False, True])
@pytest.mark.parametrize("surrogate,reset,layout", [("sigmoid", "hard", "contiguous"),
                                                    ("rectangle", "soft", "channels_last")])
@pytest.mark.parametrize("T", [3, 10])
def test_every_launch_of_a_fused_batch_norm_lif_step(bn_launches, device, p, channels, surrogate, reset, layout,
                                                      T):
    """The fused BN + LIF unit in training (batch statistics, running buffers updated, a shortcut):
    forward, the statistics, coefficient and neuron kernels; backward, the neuron backward, one
    finalize kernel (every [C] and scalar gradient, batch norm's coefficients) and the apply kernel.
    Nothing else: no small arithmetic on [C] vectors, no copies or casts. Eval without grad: one launch."""
    from asgl.kernels.bn_lif import bn_lif_fused

    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, 2, 3, 4, 5, generator=g).to(device)
    if layout == "channels_last":
        x = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    r = torch.empty_like(x).copy_(torch.randn(x.shape, generator=g)) * 0.3  # x's memory layout
    assert r.stride() == x.stride()
    x.requires_grad_()
    r.requires_grad_()
    weight = torch.full((3,), 0.7, device=device, requires_grad=True)
    bias = torch.full((3,), 0.3, device=device, requires_grad=True)
    running = [torch.zeros(3, device=device), torch.ones(3, device=device)]
    decay_logit = torch.tensor(0.0, device=device, requires_grad=True)
    width_param = torch.full((3,) if channels else (), 4.0, device=device, requires_grad=True)
    thresh = torch.tensor(1.0, device=device, requires_grad=True)
    seed = torch.tensor([7], device=device)
    kwargs = dict(residual=r, reset=reset, surrogate=surrogate, p=p, training=True, seed=seed)
    params = (x, r, weight, bias, decay_logit, width_param, thresh)
    y = bn_lif_fused(x, weight, bias, *running, decay_logit, width_param, thresh, **kwargs)
    torch.autograd.grad(y.sum(), params)  # the first call may compile: count from the second on
    bn_launches.clear()

    y = bn_lif_fused(x, weight, bias, *running, decay_logit, width_param, thresh, **kwargs)
    fwd_triton, fwd_aten = bn_launches.snapshot()
    dy = torch.ones_like(y)
    bn_launches.clear()
    grads = torch.autograd.grad(y, params, dy)
    bwd_triton, bwd_aten = bn_launches.snapshot()
    with torch.no_grad():
        bn_lif_fused(x, weight, bias, *running, decay_logit, width_param, thresh, use_batch_stats=False,
                     residual=r, training=False, seed=seed)
        eval_triton, eval_aten = bn_launches.snapshot()

    expected_fwd = {"_bn_stats_kernel": 1, "_bn_coef_kernel": 1, "_bn_lif_fwd_kernel": 1}
    assert fwd_triton == expected_fwd and not fwd_aten, f"forward launched {fwd_triton} {fwd_aten}"
    expected_bwd = {"_bn_lif_bwd_kernel": 1, "_bn_bwd_finalize_kernel": 1, "_bn_grad_apply_kernel": 1}
    assert bwd_triton == expected_bwd and not bwd_aten, f"backward launched {bwd_triton} {bwd_aten}"
    assert eval_triton == {"_bn_lif_fwd_kernel": 1} and not eval_aten, f"eval launched {eval_triton} {eval_aten}"
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.interpret
@pytest.mark.parametrize("T", [3, 10])
def test_many_tiles_add_the_group_sums_and_the_step_budget_counts_them(bn_launches, device, monkeypatch, T):
    """On many tiles the per-tile partial sums are summed in groups first: one group-sum launch before
    the coefficient kernel, one for the backward's per-channel table and one for its scalar table
    before the finalize, nothing else added; ``perf/step_budget.py`` counts the same launches
    (``asgl.kernels.bn_lif.group_sum_launches``)."""
    import asgl.kernels.bn_lif as bn_module
    from asgl.kernels.bn_lif import bn_lif_fused
    from perf.step_budget import fused_launches

    # small tiles and thresholds: 3 statistics tiles, 3-6 backward tiles, every table grouped
    for name, value in (("BLOCK", 64), ("BWD_BLOCK", {4: 32, 8: 16}), ("DIRECT_MAX_TILES", 1), ("COEF_BLOCK_C", 2)):
        monkeypatch.setattr(bn_module, name, value)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, 6, 3, 4, 5, generator=g).to(device).requires_grad_()
    weight = torch.full((3,), 0.7, device=device, requires_grad=True)
    bias = torch.full((3,), 0.3, device=device, requires_grad=True)
    running = [torch.zeros(3, device=device), torch.ones(3, device=device)]
    neuron = [torch.tensor(v, device=device, requires_grad=True) for v in (0.0, 4.0, 1.0)]
    seed = torch.tensor([7], device=device)
    bn_launches.clear()  # the inputs' creation
    y = bn_lif_fused(x, weight, bias, *running, *neuron, p=0.3, training=True, seed=seed)
    fwd, fwd_aten = bn_launches.snapshot()
    torch.autograd.grad(y.sum(), [x, weight, bias, *neuron])
    bwd, bwd_aten = bn_launches.snapshot()
    assert fwd == {"_bn_stats_kernel": 1, "_sum_tile_groups_kernel": 1, "_bn_coef_kernel": 1,
                   "_bn_lif_fwd_kernel": 1} and not fwd_aten, f"forward launched {fwd} {fwd_aten}"
    assert bwd == {"_bn_lif_bwd_kernel": 1, "_sum_tile_groups_kernel": 2, "_bn_bwd_finalize_kernel": 1,
                   "_bn_grad_apply_kernel": 1}, f"backward launched {bwd}"
    stats_args = (x, weight, bias, *running, 1.0, 1e-5, 0.1, True)
    assert fused_launches("asgl::bn_stats", stats_args) + fused_launches("asgl::bn_lif_fwd", ()) == sum(fwd.values())
    assert fused_launches("asgl::bn_lif_bwd", (y, x)) == sum(bwd.values())


# ---------------------------------------------------------------------------------------------
# GPU tier: ratios against baselines measured in the same process
# ---------------------------------------------------------------------------------------------


def _fused_and_eager(device, p=0.0):
    from perf import bench_neuron as bn

    params = bn.make_params(device)
    fused, _ = bn.make_path("fused", device=device, p=p, T=0, compile_max_t=0, params=params)
    eager, _ = bn.make_path("eager", device=device, p=p, T=0, compile_max_t=0, params=params)
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
@pytest.mark.parametrize("p", [0.0, 0.2], ids=["p0", "p0.2"])
def test_fused_fwd_bwd_at_least_70pct_of_copy_bandwidth_bf16(p):
    from perf.common import copy_bandwidth, gbps

    device = "cuda"
    bn, params, fused, _ = _fused_and_eager(device, p)
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
    model = bn.model_pct_copy("bf16", p, "fwd+bwd", device, set())
    print(f"\nfused fwd+bwd bf16 p={p}: {100 * frac:.1f}% of copy bandwidth measured, "
          f"{'n/a' if model is None else f'{model:.1f}%'} predicted by perf/static_model.py")
    assert frac >= 0.70, f"fused fwd+bwd at {100 * frac:.1f}% of copy bandwidth ({gbps(nbytes, ms):.0f} GB/s)"
