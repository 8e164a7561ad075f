"""Timing and reporting helpers shared by the ``perf/`` scripts.

* :func:`bench` — median milliseconds of a callable: ``triton.testing.do_bench`` on a GPU (it
  flushes the L2 cache before every call), a ``time.perf_counter`` loop on the CPU.
* :func:`copy_bandwidth` — the bandwidth of ``torch.empty_like(x).copy_(x)`` measured in the same
  run: the ceiling a memory-bound kernel is reported against (read N·s bytes, write N·s bytes).
* :func:`run_stamp` — device name, commit, versions: the columns every results row carries.
* :func:`print_table` / :func:`append_jsonl` — the console table (rich) and the JSON-lines file.

Nothing here queries CUDA at import time.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]

# Dense (no sparsity) peak tensor-core throughput in FLOP/s, from NVIDIA's H100 datasheet
# ("NVIDIA H100 Tensor Core GPU", SXM5 column) and the H200 product page (same SXM compute; the
# H200 differs in HBM3e capacity and bandwidth, not in FLOP/s). The datasheets print the sparse
# figures (1,979 TF bf16, 989 TF tf32); dense is half of those.
PEAK_FLOPS = {
    "H100": {"bf16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "H200": {"bf16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
}


def cuda_available() -> bool:
    """Whether CUDA can be used (queried at call time, never at import)."""
    return torch.cuda.is_available()


def default_device() -> str:
    return "cuda" if cuda_available() else "cpu"


def synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def bench(fn: Callable[[], Any], *, device: str, warmup: int = 25, rep: int = 100,
          grad_to_none: Sequence[torch.Tensor] | None = None, cpu_max_iters: int = 10,
          cpu_budget_s: float = 0.5) -> float:
    """Median time of one call of ``fn`` in milliseconds.

    GPU: ``triton.testing.do_bench(fn, warmup, rep)`` (``warmup``/``rep`` in milliseconds of GPU
    time; the L2 cache is flushed before each call; gradients in ``grad_to_none`` are reset so
    ``backward`` does not accumulate). CPU: one warm-up call, then the median of at least 3 and at
    most ``cpu_max_iters`` ``time.perf_counter`` intervals, stopping once ``cpu_budget_s`` is spent.
    """
    if str(device).startswith("cuda"):
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, grad_to_none=grad_to_none,
                                             return_mode="median"))
    times: list[float] = []
    spent = 0.0
    for i in range(cpu_max_iters + 1):
        if grad_to_none is not None:
            for t in grad_to_none:
                t.grad = None
        start = time.perf_counter()
        fn()
        dt = time.perf_counter() - start
        if i > 0:  # the first call is the warm-up
            times.append(dt * 1e3)
            spent += dt
            if len(times) >= 3 and spent >= cpu_budget_s:
                break
    return statistics.median(times)


def cpu_threads(n: int) -> None:
    """Pin intra-op threads on the CPU. One thread by default: on a shared, loaded machine an
    OpenMP region waits for every thread to be scheduled, which dominates small kernels (a compiled
    8K-element step measured 40 ms with 2 threads and 0.15 ms with 1 on 2 busy cores)."""
    torch.set_num_threads(n)


def timer_name(device: str) -> str:
    return "triton.testing.do_bench median" if str(device).startswith("cuda") else "perf_counter median"


def copy_bandwidth(numel: int, dtype: torch.dtype, device: str, **bench_kwargs) -> tuple[float, float]:
    """``(ms, GB/s)`` of ``torch.empty_like(x).copy_(x)`` for ``numel`` elements of ``dtype``.

    Bytes moved: ``2 · numel · itemsize`` (one read, one write). GB = 1e9 bytes.
    """
    x = torch.randn(numel, device=device).to(dtype)
    ms = bench(lambda: torch.empty_like(x).copy_(x), device=device, **bench_kwargs)
    return ms, gbps(2 * numel * x.element_size(), ms)


def gbps(nbytes: float, ms: float) -> float:
    return nbytes / (ms * 1e-3) / 1e9


def _git(*args: str) -> str | None:
    try:
        # --no-optional-locks: a read-only query never takes the index lock of a tree in use
        out = subprocess.run(["git", "--no-optional-locks", *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def commit() -> str:
    """Short commit of the working tree, ``+dirty`` when files differ from it (untracked included).

    ``ASGL_COMMIT`` overrides it (a copy of the tree without ``.git``, as on a remote GPU box).
    """
    if os.environ.get("ASGL_COMMIT"):
        return os.environ["ASGL_COMMIT"]
    head = _git("rev-parse", "--short", "HEAD")
    if head is None:
        return "unknown"
    dirty = _git("status", "--porcelain")
    return head + ("+dirty" if dirty else "")


def device_name(device: str) -> str:
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} logical cores)"


def run_stamp(device: str) -> dict[str, Any]:
    """The columns every results row carries: device, commit, versions, time."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "device": device_name(device),
        "commit": commit(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def peak_flops(device: str, precision: str) -> float | None:
    """Datasheet peak FLOP/s of the GPU for ``precision`` ("bf16", "tf32", "fp32"), or ``None``."""
    if not str(device).startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    for key, peaks in PEAK_FLOPS.items():
        if key in name:
            return peaks[precision]
    return None


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: ``—`` for missing values, 3 significant digits for floats."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if value != value:  # NaN
            return "—"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                caption: str | None = None) -> None:
    """Print a table with rich (plain text when stdout is not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=caption, caption_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(fmt(c) for c in row))
    Console(width=max(120, len(columns) * 12)).print(table)


def print_header(stamp: dict[str, Any]) -> None:
    print(f"device {stamp['device']} | commit {stamp['commit']} | torch {stamp['torch']} | "
          f"triton {stamp['triton']} | cuda {stamp['cuda']} | python {stamp['python']} | {stamp['date']}")


def append_jsonl(path: str | os.PathLike | None, records: Iterable[dict[str, Any]]) -> None:
    """Append one JSON object per line to ``path`` (created with its folder); no-op for ``None``.

    Called after every measured configuration, so a run stopped by a timeout keeps what it had.
    """
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for rec in records:
            f.write(json.dumps(rec, default=str) + "\n")
        f.flush()


def short_error(e: BaseException, limit: int = 160) -> str:
    """``"TypeName: first line of the message"``, cut to ``limit`` characters, for tables and notes."""
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text[:limit]}"


def flush() -> None:
    sys.stdout.flush()
