"""Evaluate a checkpoint: top-1, top-5, accuracy per time step, firing rate per layer, and the
operations and energy of an inference against those of the same network as an ANN.

    python -m asgl.train.eval RUN_DIR_or_CHECKPOINT [--out FILE] [--pj-per-ac 0.9] [--pj-per-mac 4.6]
                              [--section.key=value ...]
    accelerate launch -m asgl.train.eval runs/cifar10_resnet18_t4 --data.eval_batch_size=512

``RUN_DIR`` means its ``best.pt`` (``last.pt`` if there is no best). The model and data are those of
the checkpoint's own config; overrides change how it is evaluated (``data.root``, ``data.source``,
``data.eval_batch_size``, ``model.backend``, ``train.mixed_precision``, ...); an override of the
network itself makes a model the checkpoint does not fit, which is refused. Any number of ranks
(``accelerate launch``): each scores its share of the test split, the sums are reduced.

The evaluation is :func:`asgl.train.run.evaluate`, the one the trainer logs every epoch, so the top-1 of
``best.pt`` here is the ``best_test_acc`` of its run. Writes (rank 0) a JSON file, by default
``eval_<checkpoint name>.json`` beside the checkpoint::

    {"checkpoint", "epoch", "global_step", "model", "T", "data", "samples", "loss", "top1", "top5",
     "top1_per_step": [T], "top1_upto_step": [T], "firing_rate": {layer: rate}, "world_size",
     "operations": {"assumptions", "layers": {layer: {...}}, "total": {...}}}

(``top1_per_step[t]``: step ``t``'s logits alone; ``top1_upto_step[t]``: the mean of steps
``0..t``, what stopping inference after ``t + 1`` steps scores; accuracies in percent) and one line
on stdout: ``eval runs/quickstart/best.pt | top1 98.61 | top5 100.00 | loss 0.0512 | ...``.

``operations`` (:mod:`asgl.energy`, whose docstring states the counting rule) gives, per sample of
the test set, for every synaptic layer (convolution, linear map) and in total: the firing rate of
the neurons feeding it, the synaptic operations (accumulates) their measured spikes drive through
its fan-out, the MACs of the layers that read the real-valued input, the MACs of the same network
run as an ANN, and the energy estimates ``pj_per_ac · SOPs + pj_per_mac · MACs`` against
``pj_per_mac · ANN MACs``. The two energies per operation are assumptions (45 nm, 32-bit floating
point: 0.9 pJ per accumulate, 4.6 pJ per MAC by default; ``--pj-per-ac``, ``--pj-per-mac``) and the
JSON records them.

Exit codes: 0 done; 2 bad command line, checkpoint, config or data (nothing written).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # a file run from a clone: the repository root, not this folder (README, "From a clone")
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from asgl.extras import command_imports

with command_imports(__name__, "python -m asgl.train.eval"):
    import torch

    from asgl.energy import PJ_PER_AC, PJ_PER_MAC, OpCounter
    from asgl.train import checkpoint as ckpt_io
    from asgl.train import run_folder
    from asgl.train.config import ConfigError, build_config, parse_overrides, take_flags
    from asgl.train.data import describe_input
    from asgl.train.run import (
        EXIT_OK, EXIT_USAGE, FiringRates, UsageError, build_model, evaluate, exit_process, fail, load_data,
        make_accelerator, make_criterion, prepare, saved_config, use_channels_last,
    )


def resolve_checkpoint(target: str) -> Path:
    """A run folder's ``best.pt`` (else ``last.pt``), or the checkpoint file itself."""
    path = Path(target)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise UsageError(f"{path}: no best.pt or last.pt (not a run folder, or no epoch finished yet)")
    if not path.exists():
        raise UsageError(f"{path}: no such run folder or checkpoint")
    return path


def split_args(argv: list[str]) -> tuple[str, Path | None, dict[str, float], list[str]]:
    """``(target, --out file or None, {"pj_per_ac", "pj_per_mac"}, overrides)``: the target is the first
    argument not starting with ``--``."""
    values, rest = take_flags(argv, ("--out", "--pj-per-ac", "--pj-per-mac"))
    target = next((a for a in rest if not a.startswith("--")), None)
    if target is None:
        raise ConfigError("give a run folder or a checkpoint: "
                          "python -m asgl.train.eval RUN_DIR [--section.key=value ...]")
    rest.remove(target)
    energy = {}
    for flag, default in (("--pj-per-ac", PJ_PER_AC), ("--pj-per-mac", PJ_PER_MAC)):
        try:
            value = float(values[flag]) if flag in values else default
        except ValueError:
            value = float("nan")
        if not 0 < value < float("inf"):
            raise ConfigError(f"{flag} (an assumed energy per operation, in pJ) must be a number > 0, "
                              f"got {values[flag]!r}")
        energy[flag[2:].replace("-", "_")] = value
    return target, Path(values["--out"]) if "--out" in values else None, energy, rest


def _si(x: float) -> str:
    """``1234567.0`` -> ``"1.23M"``: three significant digits."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def _joules(pj: float) -> str:
    for scale, unit in ((1e6, "µJ"), (1e3, "nJ")):
        if pj >= scale:
            return f"{pj / scale:.3g} {unit}"
    return f"{pj:.3g} pJ"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        return EXIT_OK
    try:
        target, out, energy, rest = split_args(argv)
        overrides = parse_overrides(rest)
        path = resolve_checkpoint(target)
        ckpt = ckpt_io.load(path)
        cfg = build_config(None, overrides, base=saved_config(ckpt["config"]))
        cfg.train.trackers = ()  # an evaluation logs to its JSON file only
        out = out or path.with_name(f"eval_{path.stem}.json")
        if out.is_dir():
            raise UsageError(f"--out {out} is a folder; give a file name")
        if not out.parent.is_dir():
            raise UsageError(f"--out {out}: the folder {out.parent} does not exist")
        accelerator = make_accelerator(cfg)
        torch.manual_seed(cfg.train.seed)
        data = load_data(cfg, accelerator)
        try:
            model = build_model(cfg, data.num_classes, data.in_channels)
        except ValueError as e:
            raise UsageError(f"model: {e}") from None
        try:  # the operation count's hooks, on the model as built (its graph traced once, on the CPU)
            sample = torch.zeros(2, *describe_input(cfg.data, cfg.model.T)[2]["shape"])
            ops = OpCounter(model, sample, static_input=data.input_kind == "image")
        except ValueError as e:
            raise UsageError(str(e)) from None
    except (ConfigError, UsageError, ckpt_io.CheckpointError) as e:
        return fail(str(e), EXIT_USAGE)

    channels_last = use_channels_last(cfg, data, accelerator.device)
    model.to(accelerator.device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    fire = FiringRates(model, accelerator.device)
    model = prepare(accelerator, cfg, model)[0]
    try:
        ckpt_io.load_model_state(model, ckpt["model"])
    except (RuntimeError, ValueError, KeyError) as e:
        detail = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        return fail(f"checkpoint {path} does not fit the model {cfg.model.name} of this config: "
                     f"{detail[:400]}{' ...' if len(detail) > 400 else ''}", EXIT_USAGE)
    del ckpt["model"]
    criterion = make_criterion(cfg, data.num_classes, label_smoothing=0.0)
    result = evaluate(model, data.test, criterion, accelerator, fire, channels_last=channels_last)
    operations = ops.report(result["samples"], **energy, reduce=lambda t: accelerator.reduce(t, reduction="sum"))
    if accelerator.is_main_process:
        report = {"checkpoint": str(path), "epoch": int(ckpt["epoch"]), "global_step": int(ckpt["global_step"]),
                  "model": cfg.model.name, "T": cfg.model.T, "data": cfg.data.name, **result,
                  "world_size": accelerator.num_processes, "operations": operations}
        report.pop("samples_rank")
        run_folder.write(out, (json.dumps(report, indent=1) + "\n").encode())  # recorded in a run folder
        rates = result["firing_rate"]
        fire_text = f"{sum(rates.values()) / len(rates):.3f}" if rates else "-"
        total = operations["total"]
        print(f"eval {path} | top1 {result['top1']:.2f} | top5 {result['top5']:.2f} | loss {result['loss']:.4f} | "
              f"top1 per step {' '.join(f'{a:.1f}' for a in result['top1_per_step'])} | fire {fire_text} | "
              f"per sample: SOPs {_si(total['sops'])} + MACs {_si(total['macs'])}, ANN MACs "
              f"{_si(total['ann_macs'])} | energy {_joules(total['energy_pj'])}, ANN {_joules(total['ann_energy_pj'])} "
              f"(assumed {energy['pj_per_ac']:g} pJ/AC, {energy['pj_per_mac']:g} pJ/MAC) | "
              f"{result['samples']} samples ({data.origin}) | {out}", flush=True)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return EXIT_OK


if __name__ == "__main__":
    exit_process(main())  # a rank ends without the interpreter's finalization (see exit_process)
