"""What a run reports, in one place: ``metrics.jsonl``, the printed lines, the progress bar, trackers.

* At every log point (every ``train.log_every`` optimizer steps): the trackers get the running
  ``train/loss``, ``train/acc``, ``lr``, ``p`` and each LIF layer's ``width/<layer>``; without a
  terminal, stdout gets ``step 50/4500 | epoch 1/10 batch 50/450 | loss ... | eta 41m05s`` (the ETA
  at this invocation's pace, evaluations included). With a terminal a rich progress bar on stderr
  shows the same (main process only).
* At each epoch's end: one JSON row appended to ``metrics.jsonl``, the same numbers on one printed
  line (``epoch 3/10 | step 135 | train_loss ... | test_acc ...``) and to the trackers (step axis:
  the optimizer step).
* At the end: ``done: best test_acc 98.61 (epoch 6) | run folder runs/quickstart | 23.5 s``.

Rows and printed lines come from the main process; the per-layer widths are read on every rank
(collective under FSDP2).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch

from asgl.train import run_folder


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: max allocated on ``device`` since the last ``torch.cuda.reset_peak_memory_stats`` (the
    trainer resets it at every epoch start, so this is the epoch's peak); CPU: peak resident set size
    of this process over its whole life (the OS offers no reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux reports KiB


def flat_scalars(tree: dict, prefix: str = "") -> dict:
    """Nested dict -> ``{"a/b": number-or-str}`` (TensorBoard wants flat scalars)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flat_scalars(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[f"{prefix}{k}"] = v
        elif isinstance(v, (list, tuple)):
            out[f"{prefix}{k}"] = str(v)
    return out


def duration(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class EpochLogger:
    """The log points, epoch rows and summary of one invocation of the trainer (see the module
    docstring). ``trainer``: the :class:`asgl.train.run.Trainer`; ``config``: the flat config the
    trackers get."""

    def __init__(self, trainer, run_dir: Path, config: dict) -> None:
        self.t, self.run_dir = trainer, run_dir
        cfg, acc = trainer.cfg, trainer.accelerator
        self.main = acc.is_main_process
        self.trackers = bool(cfg.train.trackers)
        self.total_steps = cfg.optim.epochs * trainer.steps_per_epoch
        self.steps_at_start = trainer.global_step
        self.t_loop = time.perf_counter()
        if self.trackers:
            if self.main:
                run_folder.record(run_dir / "logs")
            acc.init_trackers(cfg.train.run_name, config=config)
        self.progress = None
        if self.main and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
                                     console=Console(stderr=True), transient=True)
            self.progress.start()

    def header(self, pos) -> None:
        """The run's first line: folder, network, data, ranks, parameters, where a resume continues."""
        t = self.t
        if self.main:
            m, data, acc = t.cfg.model, t.data, t.accelerator
            print(f"run {self.run_dir} | {m.name} T={m.T} | {data.num_train} train / {data.num_test} test samples "
                  f"({data.origin}) | {acc.num_processes} rank(s) on {acc.device} | {len(data.train)} "
                  f"batches/epoch/rank | {t.num_params:,} parameters"
                  + (" | channels_last" if t.channels_last else "")
                  + (f" | resumed at epoch {pos.epoch + 1} batch {pos.batch}" if pos.batch or pos.epoch else ""),
                  flush=True)

    def on_log(self, s: dict) -> None:
        """A log point (``s``: the step statistics of ``train_epoch``): tracker scalars (every rank
        computes the widths: collective under FSDP2), and without a terminal one progress line."""
        t = self.t
        widths = t.widths() if self.trackers else {}
        if self.trackers:
            t.accelerator.log({"train/loss": s["loss"], "train/acc": s["acc"], "lr": s["lr"], "p": s["p"],
                               **{f"width/{k}": v for k, v in widths.items()}}, step=t.global_step)
        if self.main and self.progress is None:
            rate = s["samples_run"] * t.accelerator.num_processes / max(s["elapsed_s"], 1e-9)
            steps_done = t.global_step - self.steps_at_start
            # ETA to the end of optim.epochs at this invocation's pace so far (evaluations included).
            eta = (time.perf_counter() - self.t_loop) / max(steps_done, 1) * (self.total_steps - t.global_step)
            print(f"step {t.global_step}/{self.total_steps} | epoch {s['epoch'] + 1}/{t.cfg.optim.epochs} "
                  f"batch {s['batch']}/{s['batches']} | loss {s['loss']:.4f} | acc {s['acc']:.2f} | "
                  f"lr {s['lr']:.4g} | samples/s {rate:.0f} | eta {duration(eta)}", flush=True)

    def epoch(self, row: dict) -> None:
        """An epoch's row (see ``asgl.train.run.epoch_row``): ``metrics.jsonl``, the printed line, the
        trackers."""
        t = self.t
        if self.main:
            path = self.run_dir / "metrics.jsonl"
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")
            run_folder.record(path)
            evaluated = row["test_acc"] is not None
            test = (f"test_loss {row['test_loss']:.4f} | test_acc {row['test_acc']:.2f} | "
                    f"best {row['best_test_acc']:.2f}" if evaluated else "test -")
            widths, fire = row["width"], row["firing_rate"]
            mean_w = sum(widths.values()) / max(1, len(widths))
            mean_f = f"{sum(fire.values()) / len(fire):.3f}" if fire else "-"
            print(f"epoch {row['epoch']}/{t.cfg.optim.epochs} | step {row['step']} | "
                  f"train_loss {row['train_loss']:.4f} | train_acc {row['train_acc']:.2f} | {test} | "
                  f"p {row['p']:.3f} | lr {row['lr']:.4g} | width {mean_w:.3f} | fire {mean_f} | "
                  f"samples/s {row['samples_per_s']:.0f} | time {row['epoch_time_s']:.1f}s | "
                  f"mem {row['peak_mem_mb']:.0f}MB", flush=True)
        if self.trackers:
            scalars = {("epoch/" + k if k in ("train_loss", "train_acc", "lr") else k): v
                       for k, v in flat_scalars(row).items() if v is not None}
            t.accelerator.log(scalars, step=t.global_step)

    def close(self) -> None:
        if self.progress:
            self.progress.stop()

    def done(self, best: float, best_epoch: int | None, t_start: float) -> None:
        """The summary line that ends a run."""
        if self.main:
            best_text = ("no evaluation yet" if best < 0 else f"best test_acc {best:.2f}"
                         + (f" (epoch {best_epoch})" if best_epoch is not None else ""))
            print(f"done: {best_text} | run folder {self.run_dir} | {time.perf_counter() - t_start:.1f} s",
                  flush=True)
