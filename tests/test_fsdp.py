"""FSDP, on two CPU ranks (gloo).

1. The checkpoint functions (``train/checkpoint.py``) on models wrapped by torch directly (FSDP1
   ``FullyShardedDataParallel``, FSDP2 ``fully_shard``, and DDP for comparison), set up as the
   trainer sets them up: the "neuron" parameters (one of them 0-dim, with their own optimizer) kept
   out of sharding, their gradients averaged by ``asgl.train.run.all_reduce_mean_``. Per wrapper:

   * the file holds full tensors under the unwrapped model's keys, and torch's positional
     ``Optimizer.state_dict()`` form (gathered from the shards, written by rank 0);
   * save at step 3 → fresh model and optimizers → load → 3 more steps gives bit-identical
     parameters, optimizer states and rank-0 buffers to 6 uninterrupted steps, and to DDP;
   * the same file loads into a plain single-process model and optimizers (any world size).

   Each wrapper is one ``torchrun --nproc_per_node 2`` of this file (``python tests/test_fsdp.py``
   is the worker).

2. The trainer itself under Accelerate's FSDP1 and FSDP2. Accelerate enables FSDP on accelerators
   only; ``tests/fsdp_cpu_launch.py`` lifts that gate on CPU ranks and runs ``train/run.py``
   unchanged. With the default per-layer (0-dim) learnable decays, widths and thresholds, FSDP
   trains bit-identical parameters to DDP, logs the same metrics, and a run cut mid-epoch and
   resumed ends where the uninterrupted one does; the recurrent SHD net trains under bf16.
   On a CPU without that script, ``--use_fsdp`` falls back to DDP and the trainer says so. The GPU
   test runs the real ``accelerate launch --use_fsdp`` on the GPUs there are.
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

pytestmark = pytest.mark.multiproc

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
STEPS, SAVE_AT = 6, 3


class Neuron(torch.nn.Module):
    """Stands in for an ``asgl.LIF``: a per-channel gain and a 0-dim offset (like a per-layer
    width), trained by their own optimizer and kept out of sharding."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.full((6,), 0.9))
        self.offset = torch.nn.Parameter(torch.tensor(0.1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h) * self.gain[:, None, None] + self.offset


class Net(torch.nn.Module):
    """Conv + BN + neuron + linear head."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 6, 3)
        self.bn = torch.nn.BatchNorm2d(6)
        self.neuron = Neuron()
        self.head = torch.nn.Linear(6 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.neuron(self.bn(self.conv(x))).flatten(1))


NEURON = ("neuron.gain", "neuron.offset")


class FusedNet(torch.nn.Module):
    """Conv + the fused batch norm + LIF unit (``asgl.BatchNormLIF`` on the triton backend, under
    the interpreter on CPU ranks) over T = 2 steps + linear head: BN's γ, β sharded, the neuron's
    decay and width kept whole."""

    def __init__(self):
        super().__init__()
        import asgl

        self.conv = torch.nn.Conv2d(1, 6, 3)
        self.neuron = asgl.BatchNormLIF(6, backend="triton", p=0.3)
        self.head = torch.nn.Linear(6 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        y = self.neuron(torch.stack([h, 0.5 * h]))  # [T, B, C, H, W]
        return self.head(y.mean(0).flatten(1))


def _neuron_module(net):
    return net.neuron.lif if isinstance(net, FusedNet) else net.neuron


def _neuron_names(net) -> tuple[str, ...]:
    """Names (in ``net``) of the neuron's parameters: their own optimizer, kept out of sharding."""
    own = {id(p) for p in _neuron_module(net).parameters()}
    return tuple(n for n, p in net.named_parameters() if id(p) in own)


def _build(kind: str, seed: int):
    """``(model, weight_optimizer, neuron_optimizer, replicated)``: as the trainer (through
    Accelerate) wraps it; ``replicated`` are the parameters whose gradients we average ourselves.
    ``kind``: ddp, fsdp1 or fsdp2, with ``-fused`` the :class:`FusedNet`."""
    torch.manual_seed(seed)
    net = FusedNet() if kind.endswith("-fused") else Net()
    names = _neuron_names(net)
    neuron = _neuron_module(net)
    kind = kind.removesuffix("-fused")
    replicated = []
    if kind == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(net)
    elif kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel

        # use_orig_params as Accelerate does by default; device_id="cpu" lets FSDP1 run without a GPU
        model = FullyShardedDataParallel(net, use_orig_params=True, device_id=torch.device("cpu"),
                                         ignored_modules=[neuron])
        replicated = list(neuron.parameters())
    else:
        from torch.distributed.fsdp import fully_shard

        model = fully_shard(net, ignored_params=set(neuron.parameters()))
        replicated = list(neuron.parameters())
    # a wrapper may have replaced the parameters: take them by name
    params = {n.replace("_fsdp_wrapped_module.", "").removeprefix("module."): p
              for n, p in model.named_parameters()}
    weights = [p for n, p in params.items() if n not in names]
    opt = torch.optim.SGD(weights, lr=0.1, momentum=0.9, weight_decay=5e-4)
    nopt = torch.optim.Adam([params[n] for n in names], lr=0.01)
    return model, opt, nopt, replicated


def _train(model, opts, replicated, steps, rank: int) -> None:
    from asgl.train.run import all_reduce_mean_

    for step in steps:
        torch.manual_seed(step)  # the in-kernel noise's seed draws, as the trainer's restored RNG state
        g = torch.Generator().manual_seed(1000 * step + rank)  # each rank its own batch
        x = torch.randn(4, 1, 8, 8, generator=g)
        y = torch.randint(0, 5, (4,), generator=g)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        all_reduce_mean_(replicated, torch.distributed.get_world_size())
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)


def _snapshot(ckpt_io, model, opt, nopt) -> dict:
    """What the trainer writes for the model and the optimizers (collective)."""
    return {"model": ckpt_io.model_state(model), "optimizer": ckpt_io.optimizer_state(model, opt),
            "neuron_optimizer": ckpt_io.optimizer_state(model, nopt) if nopt is not None else None}


def worker(kind: str, out: Path) -> None:
    """One rank: the uninterrupted run, the interrupted one (save at SAVE_AT) and its resumption."""
    import torch.distributed as dist

    from asgl.train import checkpoint as ckpt_io

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)

    model, opt, nopt, replicated = _build(kind, seed=0)
    _train(model, [opt, nopt], replicated, range(STEPS), rank)
    straight = _snapshot(ckpt_io, model, opt, nopt)

    model, opt, nopt, replicated = _build(kind, seed=0)
    _train(model, [opt, nopt], replicated, range(SAVE_AT), rank)
    state = _snapshot(ckpt_io, model, opt, nopt)
    if rank == 0:
        ckpt_io.write_atomic(ckpt_io.serialize(state), out / "ckpt.pt")
    dist.barrier()

    model, opt, nopt, replicated = _build(kind, seed=1)  # other initial weights: only the load can make them equal
    saved = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=True)
    ckpt_io.load_model_state(model, saved["model"])
    ckpt_io.load_optimizer_state(model, opt, saved["optimizer"])
    ckpt_io.load_optimizer_state(model, nopt, saved["neuron_optimizer"])
    _train(model, [opt, nopt], replicated, range(SAVE_AT, STEPS), rank)
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


def _run_worker(kind: str, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("TRITON_INTERPRET", None)
    if kind.endswith("-fused") and not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    out.mkdir()
    cmd = ["nice", TORCHRUN, "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(Path(__file__).resolve()), kind, str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=out)
    # the ranks' errors, not the launcher's long summary
    assert r.returncode == 0, "\n".join(line for line in r.stderr.splitlines()
                                        if any(w in line for w in ("Error", "error", "Fatal", "Signal", "File")))
    return {"ckpt": torch.load(out / "ckpt.pt", map_location="cpu", weights_only=True),
            **torch.load(out / "final.pt", map_location="cpu", weights_only=True)}


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found")
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")
def test_sharded_checkpoint_is_full_and_resume_is_bit_identical(tmp_path):
    from asgl.train import checkpoint as ckpt_io

    runs = {kind: _run_worker(kind, tmp_path / kind) for kind in ("ddp", "fsdp1", "fsdp2")}
    plain = Net()
    named = dict(plain.named_parameters())
    weights = [n for n in named if n not in NEURON]
    for kind, run in runs.items():
        ckpt = run["ckpt"]
        # full tensors under the unwrapped model's keys (no "module." / FSDP prefixes, no shards)
        assert {k: tuple(v.shape) for k, v in ckpt["model"].items()} == \
            {k: tuple(v.shape) for k, v in plain.state_dict().items()}, kind
        for key, names in (("optimizer", weights), ("neuron_optimizer", NEURON)):
            state = ckpt[key]
            assert [i for g in state["param_groups"] for i in g["params"]] == list(range(len(names))), kind
            # full states (gathered from the shards) for every parameter, in the optimizer's order
            buffer = "momentum_buffer" if key == "optimizer" else "exp_avg"
            assert [tuple(state["state"][i][buffer].shape) for i in range(len(names))] == \
                [tuple(named[n].shape) for n in names], (kind, key)
        _assert_identical(run["straight"], run["resumed"])
        # a real resume: the state moved on after the save
        assert not torch.equal(run["resumed"]["model"]["head.weight"], ckpt["model"]["head.weight"])
        # sharded or not, the same training: bit-identical to DDP (rank 0's buffers in each file)
        _assert_identical(run["straight"], runs["ddp"]["straight"])

        # the file loads on one process (any world size): model, both optimizers
        model = Net()
        params = dict(model.named_parameters())
        opt = torch.optim.SGD([params[n] for n in weights], lr=0.1, momentum=0.9)
        nopt = torch.optim.Adam([params[n] for n in NEURON], lr=0.01)
        ckpt_io.load_model_state(model, ckpt["model"])
        ckpt_io.load_optimizer_state(model, opt, ckpt["optimizer"])
        ckpt_io.load_optimizer_state(model, nopt, ckpt["neuron_optimizer"])
        _assert_identical(model.state_dict(), ckpt["model"])
        _assert_identical(opt.state_dict()["state"], ckpt["optimizer"]["state"])
        _assert_identical(nopt.state_dict()["state"], ckpt["neuron_optimizer"]["state"])


@pytest.mark.interpret
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found")
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")
def test_fused_batch_norm_lif_under_fsdp_matches_ddp(tmp_path):
    """The fused BN + LIF unit (custom ops, the running buffers updated in a kernel, BN's γ, β
    sharded, the noisy mask drawn in-kernel) under FSDP1 and FSDP2: the same training as DDP, bit
    for bit, and a resume from the gathered checkpoint ends where the uninterrupted run does."""
    runs = {kind: _run_worker(f"{kind}-fused", tmp_path / kind) for kind in ("ddp", "fsdp1", "fsdp2")}
    plain = FusedNet()
    for kind, run in runs.items():
        assert {k: tuple(v.shape) for k, v in run["ckpt"]["model"].items()} == \
            {k: tuple(v.shape) for k, v in plain.state_dict().items()}, kind
        _assert_identical(run["straight"], run["resumed"])
        _assert_identical(run["straight"], runs["ddp"]["straight"])
    model = runs["ddp"]["straight"]["model"]
    assert model["neuron.bn.num_batches_tracked"].item() == STEPS
    assert not torch.equal(model["neuron.bn.running_mean"], torch.zeros(6))  # updated by the kernel


GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
CPU_FSDP = ["--fsdp_sync_module_states", "false", "--fsdp_cpu_ram_efficient_loading", "false"]
TIMING = ("samples_per_s", "epoch_time_s", "peak_mem_mb")


def _launch_trainer(tmp_path: Path, launcher_args: list[str], args: list[str], mode: str, processes: int = 2):
    """``accelerate launch --use_fsdp ... train/run.py args``. ``mode``: "cpu" (CPU ranks: Accelerate
    falls back to DDP), "cpu-fsdp" (CPU ranks through ``tests/fsdp_cpu_launch.py``: real FSDP) or
    "gpu"."""
    from test_multiprocess import ACCELERATE

    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    if mode != "gpu":
        env["ACCELERATE_USE_CPU"] = "1"
    script = REPO / "tests" / "fsdp_cpu_launch.py" if mode == "cpu-fsdp" else REPO / "train" / "run.py"
    cmd = ["nice", ACCELERATE, "launch", "--use_fsdp", *launcher_args, "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(script), *args]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)


def _metrics(run_dir: Path) -> list[dict]:
    import json

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def _param_hashes(run_dir: Path, rank: int) -> list[str]:
    from test_multiprocess import rank_log

    return [e["params_sha256"] for e in rank_log(run_dir, rank) if "epoch_done" in e]


def _checkpoint_states(run_dir: Path) -> dict:
    ck = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    return {key: ck[key] for key in ("model", "optimizer", "neuron_optimizer", "epoch", "global_step")}


# Learnable per-layer (0-dim) decay, width and threshold, gradient accumulation (no_sync), bf16
# autocast, and deterministic algorithms (the GPU test needs them; on CPU ranks they change nothing).
TRAINER_EXTRA = ["--model.learn_decay=true", "--model.learn_thresh=true", "--train.grad_accum=2",
                 "--train.mixed_precision=bf16", "--train.deterministic=true"]


@pytest.fixture(scope="module")
def ddp_reference(tmp_path_factory):
    """The tiny-digits run on two CPU ranks under DDP, which FSDP must reproduce."""
    pytest.importorskip("datasets")
    from test_multiprocess import ACCELERATE, launch, two_rank_args
    from test_trainer import write_tiny_digits

    if ACCELERATE is None:
        pytest.skip("accelerate CLI not found")
    tmp = tmp_path_factory.mktemp("ddp")
    write_tiny_digits(tmp / "digits")
    r = launch(two_rank_args(tmp, "ddp", *TRAINER_EXTRA), tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    return tmp / "runs" / "ddp"


@pytest.mark.parametrize("version", ["1", "2"])
def test_trainer_fsdp_on_cpu_ranks_matches_ddp_and_resumes(tmp_path, ddp_reference, version):
    """Accelerate's FSDP (``--fsdp_version``) through the trainer, with the default 0-dim learnable
    neuron parameters: cut mid-epoch (``train.max_steps``) and resumed, it ends with the very
    parameters, optimizer states, metrics and checkpoint of the uninterrupted DDP run."""
    from test_multiprocess import two_rank_args
    from test_trainer import write_tiny_digits

    write_tiny_digits(tmp_path / "digits")
    launcher = ["--fsdp_version", version, *CPU_FSDP]
    r1 = _launch_trainer(tmp_path, launcher, two_rank_args(tmp_path, "fsdp", *TRAINER_EXTRA, "--train.max_steps=4"),
                         mode="cpu-fsdp")
    assert r1.returncode == 0, r1.stdout + r1.stderr
    assert "FSDP was asked for" not in r1.stderr  # really FSDP, not the DDP fallback
    run_dir = tmp_path / "runs" / "fsdp"
    assert torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)["step_in_epoch"] == 8
    solo = tmp_path / "runs" / "solo"
    shutil.copytree(run_dir, solo)
    r2 = _launch_trainer(tmp_path, launcher, ["--resume", str(run_dir)], mode="cpu-fsdp")
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert "resumed at epoch 1 batch 8" in r2.stdout
    assert "not bit-identical" not in r2.stderr

    # the same sharded checkpoint resumes on one process, which says what a new world size changes
    from test_trainer import run

    r3 = run(["--resume", str(solo)], tmp_path)
    assert r3.returncode == 0, r3.stdout + r3.stderr
    assert "resumed at epoch 1 batch 8" in r3.stdout
    assert "was written by 2 ranks; continuing with 1: not bit-identical" in r3.stderr
    assert [row["epoch"] for row in _metrics(solo)] == [1, 2]

    reference = _param_hashes(ddp_reference, 0)
    assert len(reference) == 2
    assert _param_hashes(run_dir, 0) == _param_hashes(run_dir, 1) == reference
    assert _metrics(run_dir) == _metrics(ddp_reference)  # losses, accuracies (rank 0's BN stats), widths, ...
    _assert_identical(_checkpoint_states(run_dir), _checkpoint_states(ddp_reference))


@pytest.mark.parametrize("version", ["1", "2"])
def test_trainer_fsdp_trains_the_recurrent_net_in_bf16(tmp_path, version):
    """The SHD recurrent net under FSDP with bf16: FSDP1 keeps its RecurrentLIF (and the input and
    recurrent weights) whole, FSDP2 shards those weights and keeps only the neuron parameters whole;
    the optimizers take their multi-tensor path, as on CUDA. The ranks agree, and the checkpoint
    holds the full fp32 model."""
    pytest.importorskip("datasets")
    pytest.importorskip("h5py")
    from test_multiprocess import rank_log
    from test_shd_end_to_end import _write_shd

    _write_shd(tmp_path / "shd", n_train=16, n_test=8)
    args = ["--config", str(REPO / "configs" / "shd_rnn_t250.yaml"), f"--data.root={tmp_path / 'shd'}",
            f"--data.cache_dir={tmp_path / 'cache'}", "--data.batch_size=8", "--data.eval_batch_size=8",
            "--optim.epochs=1", "--train.mixed_precision=bf16", f"--train.out_dir={tmp_path / 'runs'}",
            "--train.run_name=shd", "--train.debug_ranks=true"]
    r = _launch_trainer(tmp_path, ["--fsdp_version", version, *CPU_FSDP], args, mode="cpu-fsdp")
    assert r.returncode == 0, r.stdout + r.stderr
    run_dir = tmp_path / "runs" / "shd"
    logs = [rank_log(run_dir, k) for k in (0, 1)]
    done = [next(e for e in log if e.get("epoch_done") == 1) for log in logs]
    assert done[0]["params_sha256"] == done[1]["params_sha256"]
    state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)["model"]
    from asgl.train.run import build_model
    from asgl.train.config import build_config

    cfg = build_config(run_dir / "config.yaml")
    model = build_model(cfg, num_classes=20, in_channels=700)
    assert {k: (tuple(v.shape), v.dtype) for k, v in state.items()} == \
        {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    model.load_state_dict(state, strict=True)


def test_trainer_says_when_accelerate_falls_back_from_fsdp_to_ddp_on_a_cpu(tmp_path):
    """Accelerate turns ``--use_fsdp`` on a CPU into plain data parallelism without a word; the
    trainer says so (and trains, replicated)."""
    pytest.importorskip("datasets")
    from test_multiprocess import ACCELERATE, two_rank_args
    from test_trainer import write_tiny_digits

    if ACCELERATE is None:
        pytest.skip("accelerate CLI not found")
    write_tiny_digits(tmp_path / "digits")
    args = two_rank_args(tmp_path, "cpu", "--train.max_steps=2", "--train.debug_ranks=false")
    # (Accelerate's default sync_module_states needs a GPU: refused with a clear message, see below)
    no_sync = ["--fsdp_sync_module_states", "false", "--fsdp_cpu_ram_efficient_loading", "false"]
    r = _launch_trainer(tmp_path, no_sync, args, mode="cpu")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FSDP was asked for (--use_fsdp) but Accelerate runs MULTI_CPU" in r.stderr
    assert r.stderr.count("FSDP was asked for") == 1  # the main process only
    assert (tmp_path / "runs" / "cpu" / "last.pt").is_file()
    r = _launch_trainer(tmp_path, [], two_rank_args(tmp_path, "cpu2"), mode="cpu")
    assert r.returncode != 0
    assert "FSDP needs a GPU; on a CPU use --multi_gpu (DDP)" in r.stderr
    assert "Traceback" not in r.stderr.split("error: FSDP")[0]  # the ranks end cleanly, no traceback
    assert not (tmp_path / "runs" / "cpu2").exists()


@pytest.mark.gpu
@pytest.mark.skipif(GPUS < 1, reason="needs a GPU")
@pytest.mark.parametrize("version", ["1", "2"])
def test_trainer_fsdp_on_gpus_resume_is_bit_identical(tmp_path, version):
    """The real ``accelerate launch --use_fsdp`` on up to two GPUs, Accelerate's defaults, bf16,
    default (0-dim) learnable neuron parameters, deterministic algorithms: a run stopped after one
    epoch and resumed ends where the uninterrupted one does."""
    pytest.importorskip("datasets")
    from test_multiprocess import two_rank_args
    from test_trainer import write_tiny_digits

    write_tiny_digits(tmp_path / "digits")
    n = min(2, GPUS)
    launcher = ["--fsdp_version", version]
    extra = TRAINER_EXTRA
    r = _launch_trainer(tmp_path, launcher, two_rank_args(tmp_path, "straight", *extra), mode="gpu", processes=n)
    assert r.returncode == 0, r.stdout + r.stderr
    r1 = _launch_trainer(tmp_path, launcher, two_rank_args(tmp_path, "split", *extra, "--train.stop_after_epochs=1"),
                         mode="gpu", processes=n)
    assert r1.returncode == 0, r1.stdout + r1.stderr
    r2 = _launch_trainer(tmp_path, launcher, ["--resume", str(tmp_path / "runs" / "split")], mode="gpu", processes=n)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    straight, split = tmp_path / "runs" / "straight", tmp_path / "runs" / "split"
    assert len(set(_param_hashes(straight, 0))) == 2
    for rank in range(n):
        assert _param_hashes(split, rank) == _param_hashes(straight, 0)
    _assert_identical(_checkpoint_states(split), _checkpoint_states(straight))


if __name__ == "__main__":
    # launched as a file by torchrun (the worker): this clone's asgl, whether or not it is installed
    sys.path.insert(0, str(REPO))
    from asgl.train.run import exit_process

    worker(sys.argv[1], Path(sys.argv[2]))
    exit_process(0)  # as the trainer's ranks end: see exit_process
