"""Checkpoints of sharded models (``train/checkpoint.py``): two CPU ranks (gloo) under torch's FSDP1
(``FullyShardedDataParallel``) and FSDP2 (``fully_shard``), and DDP for comparison.

Accelerate's FSDP needs an accelerator: with ``ACCELERATE_USE_CPU=1`` ``accelerate launch
--use_fsdp`` quietly runs DDP (``DistributedType.MULTI_CPU``), so the trainer itself cannot be run
under FSDP on a CPU. These tests drive the checkpoint functions the trainer uses on models wrapped
by torch directly (what Accelerate does on a GPU), and check, per wrapper:

* the file holds full tensors under the unwrapped model's keys, and torch's positional
  ``Optimizer.state_dict()`` form (gathered from the shards, written by rank 0);
* save at step 3 → fresh model and optimizers → load → 3 more steps gives bit-identical parameters,
  optimizer states and rank-0 buffers to 6 uninterrupted steps;
* the same file loads into a plain single-process model and optimizers (any world size).

Each wrapper is one ``torchrun --nproc_per_node 2`` of this file (``python tests/test_fsdp.py``
is the worker). The GPU test runs the real trainer under ``accelerate launch --use_fsdp``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
STEPS, SAVE_AT = 6, 3


class Net(torch.nn.Module):
    """Conv + BN + linear head with a learnable per-channel "neuron" parameter (its own optimizer,
    as in the trainer). ``scalar=True`` adds a 0-dim parameter, like a per-layer LIF width; DDP takes
    it, torch's FSDP (1 and 2) refuses 0-dim parameters."""

    def __init__(self, scalar: bool):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 6, 3)
        self.bn = torch.nn.BatchNorm2d(6)
        self.head = torch.nn.Linear(6 * 6 * 6, 5)
        self.gain = torch.nn.Parameter(torch.full((6,), 0.9))
        self.offset = torch.nn.Parameter(torch.tensor(0.1)) if scalar else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.bn(self.conv(x))) * self.gain[:, None, None]
        if self.offset is not None:
            h = h + self.offset
        return self.head(h.flatten(1))


def _build(kind: str, seed: int):
    torch.manual_seed(seed)
    net = Net(scalar=kind == "ddp")
    neuron_names = {"gain", "offset"}
    weights = [p for n, p in net.named_parameters() if n not in neuron_names]
    neurons = [p for n, p in net.named_parameters() if n in neuron_names]
    if kind == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(net)
    elif kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel  # noqa: PLC0415

        # use_orig_params as Accelerate does by default; device_id="cpu" lets FSDP1 run without a GPU
        model = FullyShardedDataParallel(net, use_orig_params=True, device_id=torch.device("cpu"))
    else:
        from torch.distributed.fsdp import fully_shard  # noqa: PLC0415

        model = fully_shard(net)
    if kind != "ddp":  # the wrapper replaced the parameters: take them back by name
        params = dict(model.named_parameters())
        clean = {n.replace("_fsdp_wrapped_module.", ""): p for n, p in params.items()}
        weights = [clean[n] for n, _ in net.named_parameters() if n not in neuron_names and n in clean]
        neurons = [clean[n] for n, _ in net.named_parameters() if n in neuron_names and n in clean]
    if kind == "fsdp1":  # its optimizer-state gathering takes one optimizer per flattened module
        weights, neurons = weights + neurons, []
    opt = torch.optim.SGD(weights, lr=0.1, momentum=0.9, weight_decay=5e-4)
    nopt = torch.optim.Adam(neurons, lr=0.01) if neurons else None
    return model, opt, nopt


def _train(model, opts, steps, rank: int) -> None:
    opts = [opt for opt in opts if opt is not None]
    for step in steps:
        g = torch.Generator().manual_seed(1000 * step + rank)  # each rank its own batch
        x = torch.randn(4, 1, 8, 8, generator=g)
        y = torch.randint(0, 5, (4,), generator=g)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)


def _snapshot(ckpt_io, model, opt, nopt) -> dict:
    """What the trainer writes for the model and the optimizers (collective)."""
    return {"model": ckpt_io.model_state(model), "optimizer": ckpt_io.optimizer_state(model, opt),
            "neuron_optimizer": ckpt_io.optimizer_state(model, nopt) if nopt is not None else None}


def worker(kind: str, out: Path) -> None:
    """One rank: the uninterrupted run, the interrupted one (save at SAVE_AT) and its resumption."""
    import torch.distributed as dist  # noqa: PLC0415

    from train import checkpoint as ckpt_io  # noqa: PLC0415

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)

    model, opt, nopt = _build(kind, seed=0)
    _train(model, [opt, nopt], range(STEPS), rank)
    straight = _snapshot(ckpt_io, model, opt, nopt)

    model, opt, nopt = _build(kind, seed=0)
    _train(model, [opt, nopt], range(SAVE_AT), rank)
    state = _snapshot(ckpt_io, model, opt, nopt)
    if rank == 0:
        ckpt_io.write_atomic(ckpt_io.serialize(state), out / "ckpt.pt")
    dist.barrier()

    model, opt, nopt = _build(kind, seed=1)  # other initial weights: only the load can make them equal
    saved = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=True)
    ckpt_io.load_model_state(model, saved["model"])
    ckpt_io.load_optimizer_state(model, opt, saved["optimizer"])
    if nopt is not None:
        ckpt_io.load_optimizer_state(model, nopt, saved["neuron_optimizer"])
    _train(model, [opt, nopt], range(SAVE_AT, STEPS), rank)
    resumed = _snapshot(ckpt_io, model, opt, nopt)
    if rank == 0:
        torch.save({"straight": straight, "resumed": resumed}, out / "final.pt")
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flat(tree, prefix=""):
    """Nested dicts/lists -> {path: leaf}, for exact comparisons."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}/").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, sub in enumerate(tree) for k, v in _flat(sub, f"{prefix}{i}/").items()}
    return {prefix: tree}


def _assert_identical(a, b) -> None:
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys()
    for key in fa:
        if isinstance(fa[key], torch.Tensor):
            assert fa[key].dtype == fb[key].dtype and torch.equal(fa[key], fb[key]), key
        else:
            assert fa[key] == fb[key], key


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found")
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")
@pytest.mark.parametrize("kind", ["ddp", "fsdp1", "fsdp2"])
def test_sharded_checkpoint_is_full_and_resume_is_bit_identical(tmp_path, kind):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("TRITON_INTERPRET", None)
    cmd = ["nice", TORCHRUN, "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(Path(__file__).resolve()), kind, str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    # the ranks' errors, not the launcher's long summary
    assert r.returncode == 0, "\n".join(line for line in r.stderr.splitlines()
                                        if any(w in line for w in ("Error", "error", "Fatal", "Signal", "File")))

    ckpt = torch.load(tmp_path / "ckpt.pt", map_location="cpu", weights_only=True)
    plain = Net(scalar=kind == "ddp")
    # full tensors under the unwrapped model's keys (no "module." / FSDP prefixes, no shards)
    assert {k: tuple(v.shape) for k, v in ckpt["model"].items()} == \
        {k: tuple(v.shape) for k, v in plain.state_dict().items()}
    n_weights = 4 + 2 + (1 if kind == "fsdp1" else 0)  # conv, head, bn (w, b); fsdp1: the gain too
    opt_state = ckpt["optimizer"]
    assert [i for g in opt_state["param_groups"] for i in g["params"]] == list(range(n_weights))
    assert sorted(opt_state["state"]) == list(range(n_weights))  # momentum for every weight
    named = dict(plain.named_parameters())
    order = [n for n in named if n not in ("gain", "offset")] + (["gain"] if kind == "fsdp1" else [])
    # full momentum buffers (gathered from the shards), in the optimizer's parameter order
    assert [tuple(opt_state["state"][i]["momentum_buffer"].shape) for i in range(n_weights)] == \
        [tuple(named[n].shape) for n in order]
    assert (ckpt["neuron_optimizer"] is None) == (kind == "fsdp1")

    final = torch.load(tmp_path / "final.pt", map_location="cpu", weights_only=True)
    _assert_identical(final["straight"], final["resumed"])
    # a real resume: the state moved on after the save
    assert not torch.equal(final["resumed"]["model"]["head.weight"], ckpt["model"]["head.weight"])

    # the file loads on one process (any world size): model, both optimizers
    from train import checkpoint as ckpt_io  # noqa: PLC0415

    opt = torch.optim.SGD([named[n] for n in order], lr=0.1, momentum=0.9)
    ckpt_io.load_model_state(plain, ckpt["model"])
    ckpt_io.load_optimizer_state(plain, opt, ckpt["optimizer"])
    _assert_identical(plain.state_dict(), ckpt["model"])
    _assert_identical(opt.state_dict()["state"], ckpt["optimizer"]["state"])
    if kind != "fsdp1":
        nopt = torch.optim.Adam([p for n, p in named.items() if n in ("gain", "offset")], lr=0.01)
        ckpt_io.load_optimizer_state(plain, nopt, ckpt["neuron_optimizer"])
        _assert_identical(nopt.state_dict()["state"], ckpt["neuron_optimizer"]["state"])


GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0


def _launch_trainer(tmp_path: Path, launcher_args: list[str], args: list[str], cpu: bool):
    from test_multiprocess import ACCELERATE  # noqa: PLC0415

    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    if cpu:
        env["ACCELERATE_USE_CPU"] = "1"
    cmd = ["nice", ACCELERATE, "launch", "--use_fsdp", *launcher_args, "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(REPO / "train" / "run.py"), *args]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)


def test_trainer_says_when_accelerate_falls_back_from_fsdp_to_ddp_on_a_cpu(tmp_path):
    """Accelerate turns ``--use_fsdp`` on a CPU into plain data parallelism without a word; the
    trainer says so (and trains, replicated)."""
    pytest.importorskip("datasets")
    from test_multiprocess import ACCELERATE, two_rank_args  # noqa: PLC0415
    from test_trainer import write_tiny_digits  # noqa: PLC0415

    if ACCELERATE is None:
        pytest.skip("accelerate CLI not found")
    write_tiny_digits(tmp_path / "digits")
    args = two_rank_args(tmp_path, "cpu", "--train.max_steps=2", "--train.debug_ranks=false")
    # (Accelerate's default sync_module_states needs a GPU: refused with a clear message, see below)
    no_sync = ["--fsdp_sync_module_states", "false", "--fsdp_cpu_ram_efficient_loading", "false"]
    r = _launch_trainer(tmp_path, no_sync, args, cpu=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FSDP was asked for (--use_fsdp) but Accelerate runs MULTI_CPU" in r.stderr
    assert r.stderr.count("FSDP was asked for") == 1  # the main process only
    assert (tmp_path / "runs" / "cpu" / "last.pt").is_file()
    r = _launch_trainer(tmp_path, [], two_rank_args(tmp_path, "cpu2"), cpu=True)
    assert r.returncode != 0
    assert "FSDP needs a GPU; on a CPU use --multi_gpu (DDP)" in r.stderr
    assert "Traceback" not in r.stderr.split("error: FSDP")[0]  # the ranks end cleanly, no traceback
    assert not (tmp_path / "runs" / "cpu2").exists()


# Supported FSDP setups: FSDP1 with fixed neuron parameters (one optimizer), FSDP2 with per-channel
# widths and a fixed decay (no 0-dim parameters).
FSDP_SETUPS = {"1": ["--model.learn_width=false", "--model.learn_decay=false"],
               "2": ["--model.width_granularity=channel", "--model.learn_decay=false"]}


@pytest.mark.gpu
@pytest.mark.skipif(GPUS < 2, reason="the trainer under Accelerate's FSDP needs two GPUs")
@pytest.mark.parametrize("version", sorted(FSDP_SETUPS))
def test_trainer_fsdp_resume_is_bit_identical(tmp_path, version):
    from test_multiprocess import two_rank_args  # noqa: PLC0415
    from test_trainer import write_tiny_digits  # noqa: PLC0415

    write_tiny_digits(tmp_path / "digits")
    launcher = ["--fsdp_version", version]
    extra = [*FSDP_SETUPS[version], "--train.debug_ranks=false"]  # its parameter hashes are per shard
    r = _launch_trainer(tmp_path, launcher, two_rank_args(tmp_path, "straight", *extra), cpu=False)
    assert r.returncode == 0, r.stdout + r.stderr
    r1 = _launch_trainer(tmp_path, launcher, two_rank_args(tmp_path, "split", *extra, "--train.stop_after_epochs=1"),
                         cpu=False)
    assert r1.returncode == 0, r1.stdout + r1.stderr
    r2 = _launch_trainer(tmp_path, launcher, ["--resume", str(tmp_path / "runs" / "split")], cpu=False)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    a = torch.load(tmp_path / "runs" / "straight" / "last.pt", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "runs" / "split" / "last.pt", map_location="cpu", weights_only=True)
    # BN running stats are per rank under FSDP (not synchronised; the file has rank 0's): compare
    # parameters and optimizer states, which the ranks share.
    params = [k for k in a["model"] if "running_" not in k and "num_batches" not in k]
    _assert_identical({k: a["model"][k] for k in params}, {k: b["model"][k] for k in params})
    for key in ("optimizer", "neuron_optimizer"):
        _assert_identical(a[key], b[key])


@pytest.mark.gpu
@pytest.mark.skipif(GPUS < 2, reason="the trainer under Accelerate's FSDP needs two GPUs")
@pytest.mark.parametrize("version", ["1", "2"])
def test_trainer_fsdp_refuses_scalar_neuron_parameters(tmp_path, version):
    """Per-layer (0-dim) learnable neuron parameters: torch's FSDP refuses them; named, up front."""
    from test_multiprocess import two_rank_args  # noqa: PLC0415
    from test_trainer import write_tiny_digits  # noqa: PLC0415

    write_tiny_digits(tmp_path / "digits")
    r = _launch_trainer(tmp_path, ["--fsdp_version", version], two_rank_args(tmp_path, "f"), cpu=False)
    assert r.returncode != 0
    assert "FSDP cannot shard the 0-dim parameters" in r.stderr
    assert not (tmp_path / "runs" / "f").exists()


@pytest.mark.gpu
@pytest.mark.skipif(GPUS < 2, reason="the trainer under Accelerate's FSDP needs two GPUs")
def test_trainer_fsdp1_refuses_two_optimizers(tmp_path):
    from test_multiprocess import two_rank_args  # noqa: PLC0415
    from test_trainer import write_tiny_digits  # noqa: PLC0415

    write_tiny_digits(tmp_path / "digits")
    args = two_rank_args(tmp_path, "f", "--model.width_granularity=channel", "--model.learn_decay=false")
    r = _launch_trainer(tmp_path, ["--fsdp_version", "1"], args, cpu=False)
    assert r.returncode != 0
    assert "FSDP1 cannot checkpoint two optimizers" in r.stderr


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    worker(sys.argv[1], Path(sys.argv[2]))
