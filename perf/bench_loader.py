"""Per-epoch time of the image loader on the CPU: the cached path against streaming.

    python perf/bench_loader.py [--n 10000] [--size 32] [--workers 0 2] [--out perf/out/loader.jsonl]

Writes ``N`` random RGB ``size × size`` images as one CIFAR-10-layout parquet file per split (PNG
cells, as on the hub) and times one training epoch (batch 128) of

- ``cached, first epoch``: decoding every image once into the uint8 cache (``materialise``, one
  process) plus the epoch;
- ``cached, later epochs``: the epoch alone (gathering from the in-memory tensor);
- ``streaming, workers=W, epoch 0``: reading, buffer-shuffling and decoding the parquet rows during
  the epoch, in ``W`` worker processes (0: in the loop), keeping the decoded rows in memory
  (``data.stream_cache_gb``), worker start-up included;
- ``streaming, workers=W, later epochs``: gathering from that memory cache;
- ``streaming, no memory cache``: ``data.stream_cache_gb=0``, every epoch read and decoded again.

Random pixels are the worst case for PNG (no compression). Each streaming row is compared with the
cached row of the same epoch kind: first with first, later with later.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # a file run from a clone: the repository root, not this folder (README, "From a clone")
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import numpy as np


def write_split(path: Path, n: int, size: int, seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(seed)
    cells = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), mode="RGB").save(buf, format="PNG")
        cells.append({"bytes": buf.getvalue(), "path": None})
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    features = {"img": {"_type": "Image"}, "label": {"dtype": "int64", "_type": "Value"}}
    table = pa.table({"img": pa.array(cells, type=image_type),
                      "label": pa.array(rng.integers(0, 10, n), type=pa.int64())})
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def epoch_time(loader, epoch: int = 0) -> float:
    t0 = time.perf_counter()
    loader.set_epoch(epoch)
    for x, _ in loader:
        x.sum()  # touch the batch, as a training step would
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    from asgl.train.data import DataConfig, build_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_loader."))
    try:
        root = tmp / "cifar10"
        write_split(root / "plain_text" / "train-00000-of-00001.parquet", args.n, args.size, 0)
        write_split(root / "plain_text" / "test-00000-of-00001.parquet", 256, args.size, 1)
        kw = dict(name="cifar10", root=str(root), batch_size=128, eval_batch_size=128)
        rows = []
        t0 = time.perf_counter()
        cached = build_data(DataConfig(cache_dir=str(tmp / "cache"), **kw), T=1, seed=0)
        build_s = time.perf_counter() - t0
        first = build_s + epoch_time(cached.train, 0)
        later = min(epoch_time(cached.train, e) for e in (1, 2))
        # (case, seconds, the cached epoch it compares with)
        rows += [("cached, first epoch (decode + cache + epoch)", first, "first"),
                 ("cached, later epochs", later, "later")]
        for w in args.workers:
            stream = build_data(DataConfig(cache_dir=str(tmp / "cache_s"), streaming=True, workers=w, **kw),
                                T=1, seed=0)
            rows.append((f"streaming, workers={w}, epoch 0", epoch_time(stream.train, 0), "first"))
            rows.append((f"streaming, workers={w}, later epochs", min(epoch_time(stream.train, e) for e in (1, 2)),
                         "later"))
            stream.train.close()
        w = max(args.workers)
        stream = build_data(DataConfig(cache_dir=str(tmp / "cache_s"), streaming=True, workers=w, stream_cache_gb=0,
                                       **kw), T=1, seed=0)
        epoch_time(stream.train, 0)  # starts the workers, warms the parquet reader
        rows.append((f"streaming, workers={w}, no memory cache", min(epoch_time(stream.train, e) for e in (1, 2)),
                     "later"))
        stream.train.close()
        print(f"{args.n} images {args.size}x{args.size}, batch 128, {len(cached.train)} batches/epoch")
        for name, seconds, kind in rows:
            against = first if kind == "first" else later
            print(f"  {name:48s} {seconds:7.2f} s   {args.n / seconds:8.0f} img/s   "
                  f"x{seconds / against:6.2f} of the cached path's {kind} epoch")
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a") as f:
                for name, seconds, _kind in rows:
                    f.write(json.dumps({"bench": "loader", "n": args.n, "size": args.size, "case": name,
                                        "epoch_s": seconds}) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
