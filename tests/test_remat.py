"""Activation memory (``asgl.memory``): spike outputs rematerialised in the backward, block checkpointing.

* Each fused op's rebuilt output (``output_from_saved``) is its forward's, bit for bit.
* A training step with ``remat_spikes`` gives bitwise the gradients of every parameter and the batch
  norms' running statistics of one without (triton backend under the interpreter, p = 0.2, T = 4 and
  10, contiguous and channels-last, fp32 and bf16 autocast), and really rebuilds the spikes it no
  longer keeps; with ``checkpoint="blocks"`` the same within the tolerance rules, the running
  statistics and batch counts updated once.
* ResNet-18 T = 4 (bf16, channels-last, p = 0.2): bytes kept for the backward per sample, counted with
  ``perf/bench_memory.py`` (the fused ops' reference stand-ins, which keep exactly what the kernels keep:
  checked against the interpreter on small networks).
* The step budget counts the recompute: one forward launch of the unit per rebuilt output.
* Bad combinations: one-line errors, in the API, the config and the trainer; blocks through the trainer
  resume bit-identically; ``torch.compile`` traces blocks whole (remat "auto" off there).
* Slow: a whole quickstart epoch with ``remat_spikes`` on the triton backend gives bitwise the loss and
  accuracy of one without (about 100 minutes of wall time per run on 2 loaded cores, 22 CPU-minutes);
  DDP, FSDP1 and FSDP2 on two CPU ranks with resume (10 minutes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import asgl
from asgl import memory
from asgl.models.resnet import SpikingResNet

REPO = Path(__file__).resolve().parents[1]


def _net(kind: str, T: int, remat, checkpoint: str = "none") -> torch.nn.Module:
    """A small ResNet (identity and projection shortcuts, ResNet-19's LIF head, channel widths,
    learnable thresholds) or the digits CNN (units between pools), on the triton backend."""
    torch.manual_seed(0)
    if kind == "resnet":
        net = SpikingResNet([(8, 2), (16, 1)], stem=8, hidden=12, num_classes=5, T=T, p=0.2, width=2.0,
                            width_granularity="channel", learn_thresh=True, backend="triton")
    else:
        net = asgl.create_model("digits_cnn", T=T, p=0.2, backend="triton")
    net.remat_spikes = remat
    return net.set_checkpoint(checkpoint)


def _step(kind: str, T: int, channels_last: bool, low: bool, remat, checkpoint: str = "none", device: str = "cpu"):
    """One training step: ``(gradients, buffers)`` by name."""
    net = _net(kind, T, remat, checkpoint).to(device)
    x = torch.randn(2, 3 if kind == "resnet" else 1, 8, 8, generator=torch.Generator().manual_seed(1)).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    torch.manual_seed(5)  # the units' seed draws
    with torch.autocast(device, dtype=torch.bfloat16, enabled=low):
        logits = net(x)
    (logits.float().square().mean()).backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    return grads, dict(net.named_buffers())


@pytest.fixture
def deterministic(monkeypatch):
    """cuDNN's deterministic algorithms on a GPU: two runs compared bit for bit must not differ by
    the convolutions' own atomics (the fused kernels are deterministic)."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


@pytest.fixture
def count_rebuilds(monkeypatch):
    """Counts the fused ops' rebuilds (``output_from_saved`` calls) per kernel module."""
    from asgl.kernels import bn_lif, lif

    calls = {"bn_lif": 0, "lif": 0}
    for name, module in (("bn_lif", bn_lif), ("lif", lif)):
        def counted(ctx, _name=name, _real=module.output_from_saved):
            calls[_name] += 1
            return _real(ctx)
        monkeypatch.setattr(module, "output_from_saved", counted)
    return calls


# ---------------------------------------------------------------------------------- rebuilt outputs


@pytest.mark.interpret
@pytest.mark.parametrize("T", [4, 10])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_rebuilt_outputs_are_the_forwards(T, dtype, device):
    from asgl.kernels import bn_lif, lif, rlif

    g = torch.Generator().manual_seed(T)
    for channels_last in (False, True):
        x, r = ((2 * torch.randn(T, 3, 8, 5, 7, generator=g)).to(dtype) for _ in range(2))
        if channels_last:
            x, r = (t.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3) for t in (x, r))
        x, r = x.to(device).requires_grad_(), r.to(device).requires_grad_()
        params = [torch.rand(8, device=device, requires_grad=True), torch.randn(8, device=device, requires_grad=True),
                  torch.zeros(8, device=device), torch.ones(8, device=device),
                  torch.tensor(0.3, device=device, requires_grad=True), torch.full((8,), 2.0, device=device,
                                                                                   requires_grad=True)]
        for residual in (None, r):
            y = bn_lif.bn_lif_fused(x, *params, 1.0, residual=residual, p=0.2, seed=7)
            again = bn_lif.output_from_saved(y.grad_fn)
            assert torch.equal(again, y) and again.stride() == y.stride()
            assert 0.05 < (y != 0).float().mean() < 0.95
        y = lif.lif_fused(x, params[4], params[5], 1.0, p=0.2, seed=5)
        assert torch.equal(lif.output_from_saved(y.grad_fn), y)
    wx = torch.randn(T, 5, 7, generator=g).to(device).requires_grad_()
    rec = (0.3 * torch.randn(7, 7, generator=g)).to(device).requires_grad_()
    y = rlif.recurrent_lif_fused(wx, rec, params[4], torch.tensor(1.5, device=device, requires_grad=True), 1.0,
                                 p=0.3, seed=9)
    assert torch.equal(rlif.output_from_saved(y.grad_fn), y)


# ------------------------------------------------------------------------------- training steps


@pytest.mark.interpret
@pytest.mark.parametrize("kind, T, channels_last, low", [
    ("resnet", 4, False, False), ("resnet", 4, True, True), ("resnet", 10, True, True), ("resnet", 10, True, False),
    ("digits", 4, True, True), ("digits", 10, True, False),
    # contiguous memory at small maps runs one interpreted program per channel (about 10 times slower)
    pytest.param("resnet", 10, False, True, marks=pytest.mark.slow),
    pytest.param("digits", 10, False, False, marks=pytest.mark.slow),
], ids=lambda v: str(v))
def test_remat_step_is_bitwise_the_step_without(kind, T, channels_last, low, count_rebuilds, deterministic, device):
    g0, b0 = _step(kind, T, channels_last, low, remat=False, device=device)
    assert count_rebuilds == {"bn_lif": 0, "lif": 0}
    g1, b1 = _step(kind, T, channels_last, low, remat=True, device=device)
    # every unit output some op kept is rebuilt once: the ResNet's 6 units but the last (the global pool
    # keeps nothing) and its head LIF; the digits CNN's 3 units (the pools and the readout keep them)
    assert count_rebuilds == ({"bn_lif": 6, "lif": 1} if kind == "resnet" else {"bn_lif": 3, "lif": 0})
    assert g0.keys() == g1.keys() and b0.keys() == b1.keys()
    for name in g0:
        assert torch.equal(g0[name], g1[name]), name
    for name in b0:
        assert torch.equal(b0[name], b1[name]), name


@pytest.mark.interpret
@pytest.mark.parametrize("kind, T, channels_last, low", [
    ("resnet", 4, True, True), ("digits", 10, True, False),
    pytest.param("resnet", 4, False, True, marks=pytest.mark.slow), pytest.param("digits", 10, False, False,
                                                                                 marks=pytest.mark.slow),
], ids=lambda v: str(v))
def test_blocks_step_matches_within_tolerance_and_counts_the_batch_once(kind, T, channels_last, low, deterministic,
                                                                       device):
    g0, b0 = _step(kind, T, channels_last, low, remat=False, device=device)
    for remat in (False, True):
        g1, b1 = _step(kind, T, channels_last, low, remat=remat, checkpoint="blocks", device=device)
        for name in g0:  # the recompute runs the same ops on the same inputs; float32 gradients
            torch.testing.assert_close(g1[name], g0[name], rtol=1e-5, atol=1e-6, msg=name)
        # running statistics: updated once, in the forward (the recompute's updates are undone)
        for name in b0:
            assert torch.equal(b0[name], b1[name]), name
        assert all(v.item() == 1 for n, v in b1.items() if n.endswith("num_batches_tracked"))


@pytest.mark.interpret
def test_shd_network_keeps_only_the_recurrent_layers_state(deterministic, device):
    """The SHD network (recurrent LIF, then the readout): with remat_spikes the readout keeps no copy of
    the recurrent layer's output (rebuilt from its membrane u), the gradients bit for bit the same."""
    from asgl.models.shd import SHDRNN
    from perf import bench_memory

    x = torch.rand(3, 12, 10, generator=torch.Generator().manual_seed(2)).to(device)
    grads, kept = {}, {}
    for remat in (False, True):
        torch.manual_seed(0)
        net = SHDRNN(num_classes=4, T=12, in_channels=10, hidden=16, p=0.2, backend="triton").to(device)
        net.remat_spikes = remat
        if device == "cpu":
            kept[remat] = bench_memory.held(net, x)[0]
        torch.manual_seed(3)
        net(x).square().mean().backward()
        grads[remat] = {n: p.grad for n, p in net.named_parameters()}
    for name, g in grads[False].items():
        assert torch.equal(g, grads[True][name]), name
    if kept:
        assert "spikes (unit outputs)" in kept[False] and "spikes (unit outputs)" not in kept[True]
        assert kept[True]["membranes u"] == kept[False]["membranes u"]


def test_saved_tensors_modified_in_place_still_raise():
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4, requires_grad=True)
    with memory.RematScope():
        h = x * 2
        y = lin(h)
    with torch.no_grad():
        h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_a_registered_output_is_rebuilt_once_and_must_keep_its_layout():
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4, requires_grad=True)
    calls = []

    def rebuild(value):
        calls.append(1)
        return value

    for rebuilt, ok in ((lambda y: y.clone(), True), (lambda y: y.contiguous(), False)):
        calls.clear()
        with memory.RematScope():
            y = (x * 2).t().contiguous().t()  # column-major [5, 4]
            memory._state.scope.add(y, lambda y=y.detach(): rebuild(rebuilt(y)))
            out = lin(y[1:]) + lin(y[:2]).sum()  # two consumers of views of y
        if ok:
            out.sum().backward()
            assert calls == [1]
        else:
            with pytest.raises(RuntimeError, match="is not laid out as the forward's"):
                out.sum().backward()


# ----------------------------------------------------------------------------------- bytes kept


@pytest.fixture(scope="module")
def resnet18_rows():
    from perf import bench_memory

    return {c: bench_memory.measure_cpu("resnet18", c, (1, 2), stand_in=True) for c in bench_memory.CHOICES}


def test_resnet18_bytes_kept_per_sample(resnet18_rows):
    none, remat, blocks = (resnet18_rows[c] for c in ("none", "remat_spikes", "remat_spikes+blocks"))
    # today's 9.34 MiB per sample, by the count (saved_tensors_hooks) and by what stays alive
    assert none["saved_mib_per_sample_hooks"] == none["saved_mib_per_sample"] == pytest.approx(9.34, abs=0.005)
    assert remat["saved_mib_per_sample"] <= 5.0
    assert blocks["saved_mib_per_sample"] <= 3.0
    # no spike tensor left with remat alone; the blocks' inputs with blocks
    assert "spikes (unit outputs)" in none["by_owner_mib_per_sample"]
    assert "spikes (unit outputs)" not in remat["by_owner_mib_per_sample"]
    assert remat["extra_forward_flops_pct"] == 0 and blocks["extra_forward_flops_pct"] > 95
    assert none["max_batch_80gb"] < remat["max_batch_80gb"] < blocks["max_batch_80gb"]


@pytest.mark.interpret
@pytest.mark.parametrize("kind", ["resnet", "digits"])
def test_stand_in_keeps_what_the_kernels_keep(kind):
    from perf import bench_memory

    if torch.cuda.is_available():
        pytest.skip("a CPU count (the stand-ins compute on the CPU)")
    x = torch.randn(2, 3 if kind == "resnet" else 1, 8, 8).contiguous(memory_format=torch.channels_last)
    for remat, checkpoint in bench_memory.CHOICES.values():
        net = _net(kind, 4, remat, checkpoint).to(memory_format=torch.channels_last)
        kept = [sum(bench_memory.held(net, x, stand_in=s)[0].values()) for s in (False, True)]
        assert kept[0] == kept[1] > 0, (remat, checkpoint)


# ------------------------------------------------------------------------------------ step budget


def test_step_budget_counts_the_recompute():
    from perf import step_budget as sb
    from asgl.train.config import build_config

    rows = {}
    for choice in ("false", "auto"):
        counter = sb.count_step(build_config("configs/cifar10_resnet18_t4.yaml", {"model.remat_spikes": choice}),
                                batch=2)
        rows[choice] = counter
    off, on = rows["false"], rows["auto"]
    # 16 of the 17 units rebuilt (the last one's output only feeds the global pool, which keeps
    # nothing), one forward launch each, plus the 3 projection shortcuts' batch norms
    assert off.ops["backward"].get("asgl.bn_lif_fwd", 0) == 0
    assert on.ops["backward"]["asgl.bn_lif_fwd"] == 16
    assert on.ops["backward"]["aten.native_batch_norm"] == 3
    assert on.launches["forward"] == off.launches["forward"]
    extra = sum(on.launches["backward"].values()) - sum(off.launches["backward"].values())
    assert extra == 16 + 3 + 6  # and the copies of the shortcut batch norms' running buffers
    assert on.bytes["backward"]["elementwise"] > off.bytes["backward"]["elementwise"]
    assert on.bytes["forward"] == off.bytes["forward"]
    # the order: a unit's output is rebuilt before the backward of the unit that consumes it
    order = on.fused_order["backward"]
    assert order[0] == "bn_lif_bwd" or order[:2] == ["bn_lif_fwd", "bn_lif_bwd"]
    assert order.count("bn_lif_bwd") == 17


def test_fused_extra_bytes_of_the_batch_norm_backward():
    from perf import step_budget as sb

    x = torch.zeros(4, 2, 3, dtype=torch.bfloat16)
    assert sb.fused_extra_bytes("asgl::bn_lif_bwd", (None, x, None)) == 3 * 48
    assert sb.fused_extra_bytes("asgl::bn_lif_bwd", (None, x, x)) == 2 * 48
    assert sb.fused_extra_bytes("asgl::lif_fwd", (x,)) == 0


# ------------------------------------------------------------------------------- bad combinations


def test_bad_combinations_are_one_line_errors():
    with pytest.raises(ValueError, match="remat_spikes=True needs the fused units"):
        asgl.create_model("digits_cnn", remat_spikes=True, backend="torch")
    with pytest.raises(ValueError, match="remat_spikes must be 'auto', True or False"):
        asgl.create_model("digits_cnn", remat_spikes="yes")
    with pytest.raises(ValueError, match="checkpoint='blocks': SHDRNN has no blocks to checkpoint"):
        asgl.create_model("shd_rnn", checkpoint="blocks")
    with pytest.raises(ValueError, match="checkpoint must be one of none, blocks"):
        asgl.create_model("resnet18", checkpoint="layers")
    # auto backend on CPU tensors runs the torch reference: True cannot apply there
    net = asgl.create_model("digits_cnn", T=2, remat_spikes=True)
    with pytest.raises(ValueError, match="remat_spikes=True, but a BNLIF runs the torch reference"):
        net(torch.randn(2, 1, 8, 8))
    with torch.no_grad():  # nothing kept, nothing to recompute: no error
        net(torch.randn(2, 1, 8, 8))
    assert asgl.create_model("digits_cnn", T=2, remat_spikes="auto")(torch.randn(2, 1, 8, 8)).shape == (2, 2, 10)


@pytest.mark.parametrize("overrides, message", [
    ({"model.remat_spikes": "true", "model.backend": "torch"}, "model.remat_spikes=true needs the fused units"),
    ({"model.remat_spikes": "true", "train.compile": "default"}, "model.remat_spikes=true cannot be compiled"),
    ({"model.remat_spikes": "sometimes"}, "model.remat_spikes must be one of auto, true, false"),
    ({"train.checkpoint": "layers"}, "train.checkpoint must be one of none, blocks"),
])
def test_config_refuses_bad_combinations(overrides, message):
    from asgl.train.config import ConfigError, build_config

    with pytest.raises(ConfigError, match=message) as e:
        build_config("configs/quickstart.yaml", overrides)
    assert "\n" not in str(e.value)


def test_config_values_reach_the_model():
    from asgl.train.config import build_config, to_dict
    from asgl.train.run import build_model

    cfg = build_config("configs/quickstart.yaml", {"model.remat_spikes": "false", "train.checkpoint": "blocks"})
    assert to_dict(cfg)["model"]["remat_spikes"] is False and to_dict(cfg)["train"]["checkpoint"] == "blocks"
    model = build_model(cfg, 10, 1)
    assert model.remat_spikes is False and model.checkpoint == "blocks"
    assert build_model(build_config("configs/quickstart.yaml"), 10, 1).remat_spikes == "auto"
    cfg = build_config("configs/shd_rnn_t250.yaml", {"train.checkpoint": "blocks"})
    with pytest.raises(ValueError, match="SHDRNN has no blocks to checkpoint"):
        build_model(cfg, 20, 700)


# -------------------------------------------------------------------------------------- the trainer


@pytest.mark.parametrize("override, message", [
    ("--model.remat_spikes=true --model.backend=torch", "model.remat_spikes=true needs the fused units"),
    ("--model.remat_spikes=true --train.compile=default", "model.remat_spikes=true cannot be compiled"),
    ("--model.name=shd_rnn --train.checkpoint=blocks", "model: checkpoint='blocks': SHDRNN has no blocks"),
])
def test_trainer_refuses_bad_combinations_in_one_line(tmp_path, override, message):
    pytest.importorskip("datasets")
    from test_trainer import run, tiny_args, write_tiny_digits

    write_tiny_digits(tmp_path / "digits")
    r = run(tiny_args(tmp_path, "bad", *override.split()), tmp_path)
    assert r.returncode == 2
    assert message in r.stderr.strip().splitlines()[-1] and "Traceback" not in r.stderr


def test_trainer_with_blocks_resumes_bit_identically(tmp_path):
    """``train.checkpoint=blocks`` through the trainer (CPU, torch backend): an uninterrupted run and
    one cut mid-epoch and resumed end with the same parameters, running statistics and metrics."""
    pytest.importorskip("datasets")
    from test_trainer import params, rows, run, tiny_args, write_tiny_digits

    write_tiny_digits(tmp_path / "digits")
    straight = run(tiny_args(tmp_path, "straight", "--train.checkpoint=blocks"), tmp_path)
    assert straight.returncode == 0, straight.stderr
    cut = run(tiny_args(tmp_path, "cut", "--train.checkpoint=blocks", "--train.max_steps=17"), tmp_path)
    assert cut.returncode == 0, cut.stderr
    resumed = run(["--resume", str(tmp_path / "runs" / "cut")], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a, b = params(tmp_path / "runs" / "straight"), params(tmp_path / "runs" / "cut")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert a["features.0.bn_lif.bn.num_batches_tracked"].item() == 24  # 12 steps an epoch, counted once
    ra, rb = rows(tmp_path / "runs" / "straight"), rows(tmp_path / "runs" / "cut")
    for key in ("train_loss", "test_acc", "lr"):
        assert ra[1][key] == rb[1][key], key


# ------------------------------------------------------------------------------------ torch.compile


@pytest.mark.interpret
def test_compiled_blocks_trace_whole_and_auto_remat_is_off(device):
    """``torch.compile(fullgraph=True)`` of a network with ``remat_spikes="auto"`` (off when compiled:
    no hooks, no graph break) and ``checkpoint="blocks"`` (traced as checkpoint regions): the eager
    step's outputs, gradients and running statistics, the batch counted once."""
    # channels-last memory: a few interpreted programs per unit (contiguous small maps run one per channel)
    net = _net("resnet", 4, "auto", "blocks").to(device, memory_format=torch.channels_last)
    twin = _net("resnet", 4, "auto", "none").to(device, memory_format=torch.channels_last)
    compiled = torch.compile(net, fullgraph=True, backend="inductor" if device == "cuda" else "aot_eager")
    x = torch.randn(2, 3, 8, 8, device=device).contiguous(memory_format=torch.channels_last)
    out = {}
    for name, model in (("eager", twin), ("compiled", compiled)):
        torch.manual_seed(9)
        y = model(x)
        grads = torch.autograd.grad(y.square().mean(), [p for p in model.parameters()])
        out[name] = y, grads
    assert torch.equal(out["eager"][0], out["compiled"][0])
    for a, b in zip(out["eager"][1], out["compiled"][1]):
        torch.testing.assert_close(a, b)
    for (name, a), b in zip(twin.named_buffers(), net.buffers()):
        torch.testing.assert_close(a, b, msg=name)


# ------------------------------------------------------------------------- a quickstart epoch (slow)

TIMING = ("samples_per_s", "epoch_time_s", "peak_mem_mb")


@pytest.mark.slow
@pytest.mark.interpret
def test_quickstart_epoch_with_remat_is_bitwise_the_same(tmp_path):
    """``configs/quickstart.yaml`` for one epoch (its 10-epoch schedules, 23 steps, then the test set)
    on the triton backend under the interpreter, remat_spikes true against false: the same losses,
    accuracies, widths and firing rates, and the same parameters, bit for bit. About 25 minutes of
    two busy cores (each run ~10 CPU-minutes in the interpreter)."""
    pytest.importorskip("datasets")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONWARNINGS": "ignore"}
    metrics, params = {}, {}
    for remat in ("false", "true"):
        args = ["--config", str(REPO / "configs" / "quickstart.yaml"), "--model.backend=triton",
                f"--model.remat_spikes={remat}", "--train.stop_after_epochs=1",
                f"--data.root={REPO / 'data' / 'digits'}",
                f"--data.cache_dir={tmp_path / 'cache'}", f"--train.out_dir={tmp_path / 'runs'}",
                f"--train.run_name={remat}"]
        r = subprocess.run(["nice", sys.executable, str(REPO / "train" / "run.py"), *args], cwd=tmp_path,
                           capture_output=True, text=True, timeout=7200, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        run_dir = tmp_path / "runs" / remat
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        metrics[remat] = [{k: v for k, v in row.items() if k not in TIMING} for row in rows]
        params[remat] = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)["model"]
    assert len(metrics["true"]) == 1 and metrics["true"][0]["test_acc"] > 0.5
    assert metrics["true"] == metrics["false"]
    for name, value in params["false"].items():
        assert torch.equal(value, params["true"][name]), name


# --------------------------------------------------------------------- DDP, FSDP1, FSDP2 (slow)

STEPS, SAVE_AT = 3, 2
CHOICES = {"none": (False, "none"), "remat": (True, "none"), "remat+blocks": (True, "blocks")}


def _wrapped(kind: str, choice: str, seed: int):
    """A tiny ResNet on the triton backend (T = 2), wrapped as the trainer wraps it (the neurons whole,
    their gradients averaged by ``all_reduce_mean_``); ``(model, optimizers, replicated)``."""
    remat, checkpoint = CHOICES[choice]
    torch.manual_seed(seed)
    net = SpikingResNet([(4, 1), (8, 1)], stem=4, hidden=6, num_classes=5, T=2, p=0.2, width=2.0, backend="triton")
    net.remat_spikes = remat
    net.set_checkpoint(checkpoint)
    neurons = asgl.neurons(net)
    own = {id(p) for m in neurons for p in m.parameters()}
    names = [n for n, p in net.named_parameters() if id(p) in own]
    replicated = []
    if kind == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(net)
    elif kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel

        model = FullyShardedDataParallel(net, use_orig_params=True, device_id=torch.device("cpu"),
                                         ignored_modules=neurons)
        replicated = [p for m in neurons for p in m.parameters()]
    else:
        from torch.distributed.fsdp import fully_shard

        model = fully_shard(net, ignored_params={p for m in neurons for p in m.parameters()})
        replicated = [p for m in neurons for p in m.parameters()]
    params = {n.replace("_fsdp_wrapped_module.", "").removeprefix("module."): p for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for n, p in params.items() if n not in names], lr=0.1, momentum=0.9, weight_decay=5e-4)
    nopt = torch.optim.Adam([params[n] for n in names], lr=0.01)
    return model, opt, nopt, replicated


def _train_steps(model, opts, replicated, steps, rank: int) -> None:
    from asgl.train.run import all_reduce_mean_

    for step in steps:
        torch.manual_seed(step)  # the units' seed draws, as the trainer's restored RNG state
        g = torch.Generator().manual_seed(1000 * step + rank)
        x, y = torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 5, (4,), generator=g)
        asgl.mean_ce_loss(model(x), y).backward()
        all_reduce_mean_(replicated, torch.distributed.get_world_size())
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)


def _rank_worker(kind: str, out: Path) -> None:
    """One rank (``torchrun --nproc_per_node 2 tests/test_remat.py KIND OUT``): per choice, the
    uninterrupted run, and a run saved at SAVE_AT, loaded into other initial weights and resumed."""
    import torch.distributed as dist

    from asgl.train import checkpoint as ckpt_io

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)

    def snapshot(model, opt, nopt):
        return {"model": ckpt_io.model_state(model), "optimizer": ckpt_io.optimizer_state(model, opt),
                "neuron_optimizer": ckpt_io.optimizer_state(model, nopt)}

    results = {}
    for choice in CHOICES:
        model, opt, nopt, replicated = _wrapped(kind, choice, seed=0)
        _train_steps(model, [opt, nopt], replicated, range(STEPS), rank)
        straight = snapshot(model, opt, nopt)
        model, opt, nopt, replicated = _wrapped(kind, choice, seed=0)
        _train_steps(model, [opt, nopt], replicated, range(SAVE_AT), rank)
        saved = snapshot(model, opt, nopt)
        model, opt, nopt, replicated = _wrapped(kind, choice, seed=1)
        ckpt_io.load_model_state(model, saved["model"])
        ckpt_io.load_optimizer_state(model, opt, saved["optimizer"])
        ckpt_io.load_optimizer_state(model, nopt, saved["neuron_optimizer"])
        _train_steps(model, [opt, nopt], replicated, range(SAVE_AT, STEPS), rank)
        results[choice] = {"straight": straight, "resumed": snapshot(model, opt, nopt)}
    if rank == 0:
        torch.save(results, out / "final.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.interpret
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")
def test_ddp_fsdp1_fsdp2_train_the_same_and_resume_bit_identical(tmp_path):
    """On two CPU ranks (interpreter) under DDP, FSDP1 and FSDP2: remat_spikes trains bit-identical
    parameters, optimizer states and running statistics to none, remat_spikes+blocks within float32
    rounding of it; every choice resumes bit-identically from the gathered checkpoint, and every
    wrapper trains what DDP trains."""
    from test_fsdp import TORCHRUN, _assert_identical, _flat, _free_port

    if TORCHRUN is None:
        pytest.skip("torchrun not found")
    runs = {}
    for kind in ("ddp", "fsdp1", "fsdp2"):
        out = tmp_path / kind
        out.mkdir()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "TRITON_INTERPRET": "1",
               "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        r = subprocess.run(["nice", TORCHRUN, "--nproc_per_node", "2", "--master_port", str(_free_port()),
                            str(Path(__file__).resolve()), kind, str(out)], capture_output=True, text=True,
                           timeout=1200, env=env, cwd=out)
        assert r.returncode == 0, "\n".join(line for line in r.stderr.splitlines() if "rror" in line or "File" in line)
        runs[kind] = torch.load(out / "final.pt", map_location="cpu", weights_only=True)
    for kind, run in runs.items():
        for choice, result in run.items():
            _assert_identical(result["straight"], result["resumed"])
            _assert_identical(result["straight"], runs["ddp"][choice]["straight"])
        _assert_identical(run["remat"]["straight"], run["none"]["straight"])
        a, b = _flat(run["remat+blocks"]["straight"]), _flat(run["none"]["straight"])
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], torch.Tensor) and a[key].is_floating_point():
                torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
            else:
                assert torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key], key


if __name__ == "__main__":  # a rank of test_ddp_fsdp1_fsdp2_train_the_same_and_resume_bit_identical
    from asgl.train.run import exit_process

    _rank_worker(sys.argv[1], Path(sys.argv[2]))
    exit_process(0)  # as the trainer's ranks end: see exit_process


def test_bench_memory_cli(tmp_path):
    from test_perf_scripts import read_jsonl, run_script

    out = tmp_path / "memory.jsonl"
    stdout = run_script("perf/bench_memory.py", "--models", "resnet18", "--choices", "remat_spikes", "--kernels",
                        "stand-in", "--json", str(out), timeout=600)
    assert "kept for the backward" in stdout
    (row,) = read_jsonl(out)
    for key in ("model", "T", "choice", "saved_mib_per_sample", "fixed_mib", "extra_forward_flops_pct",
                "max_batch_80gb", "by_owner_mib_per_sample", "commit", "device"):
        assert key in row, key
    assert (row["model"], row["T"], row["choice"]) == ("resnet18", 4, "remat_spikes")
    if not torch.cuda.is_available():
        r = subprocess.run([sys.executable, str(REPO / "perf" / "bench_memory.py"), "--gpu"], capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 2 and "--gpu needs CUDA" in r.stderr
