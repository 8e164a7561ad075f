"""Batch iteration shared by every data set: sharding across ranks, epoch order, resumption, cache.

Order and sharding (``W`` ranks, local batch ``B = batch_size // W``, ``N`` samples):

- train: the epoch's order is ``randperm(N)`` from a CPU generator seeded by ``(seed, epoch)``
  only, so every rank computes the same permutation. Global batch ``k`` is
  ``perm[k·W·B : (k+1)·W·B]`` and rank ``r`` takes its slice ``[r·B : (r+1)·B]``: the shards are
  disjoint, every rank gets ``N // (W·B)`` batches, and the remainder is dropped.
- test: no shuffling. The ``N`` samples are cut, in order, into ``nb·W`` contiguous chunks whose
  sizes differ by at most one (``nb = ceil(N / (W·B))``); rank ``r`` takes chunks ``k·W + r``. Every
  sample is evaluated exactly once, every rank runs the same number of batches, and a batch holds
  at most ``B`` samples (the last ones may hold one fewer).
- augmentation of batch ``k`` draws from a generator on the data's device seeded by
  ``(seed, epoch, rank, k)``, so ``set_epoch(e, start_batch=j)`` reproduces exactly the tail of
  epoch ``e`` from batch ``j`` on, augmentations included.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch


class DataNotFoundError(FileNotFoundError):
    """The files of a data set are not where they are expected; the message says how to get them."""


class DataFormatError(ValueError):
    """The files exist but do not have the expected layout, columns or encoding."""


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of the integers ``parts`` (stable across processes)."""
    digest = hashlib.blake2b(struct.pack(f"<{len(parts)}q", *parts), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


# Tags keep the permutation stream and the augmentation stream of one (seed, epoch) independent.
_PERM_TAG = 0x5045524D
_AUG_TAG = 0x41554721


class Loader:
    """Iterable of ``(inputs, labels)`` already on the loader's device; labels are int64 ``[B]``.

    ``len(loader)`` is the number of batches this rank yields per epoch. ``set_epoch(epoch,
    start_batch)`` selects the epoch (its order is a pure function of ``(seed, epoch)``) and skips
    its first ``start_batch`` batches, for resuming mid-epoch.
    """

    num_samples: int  # samples this rank sees per epoch

    def __init__(self) -> None:
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be in [0, {len(self)}], got {start_batch}")
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def __len__(self) -> int:
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError


# A batch transform: (raw batch on device, generator on device) -> model inputs.
Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def train_batches(n: int, batch_size: int, world_size: int) -> int:
    """Batches per rank and epoch for training (remainder dropped)."""
    return n // (batch_size * world_size)


def eval_chunks(n: int, batch_size: int, rank: int, world_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of this rank's test batches (see the module docstring)."""
    nb = math.ceil(n / (batch_size * world_size))
    total = nb * world_size
    base, extra = divmod(n, total)
    chunks = []
    for k in range(nb):
        j = k * world_size + rank
        start = j * base + min(j, extra)
        stop = start + base + (1 if j < extra else 0)
        if stop > start:
            chunks.append((start, stop))
    return chunks


class TensorLoader(Loader):
    """Batches gathered from tensors resident on ``device``.

    ``gather(idx)`` maps int64 indices (on ``device``) to the raw batch (e.g. ``x[idx]`` for dense
    uint8 images, or a densified sparse spike train); ``transform`` then augments/normalises it.
    """

    def __init__(
        self,
        gather: Callable[[torch.Tensor], torch.Tensor],
        labels: torch.Tensor,
        *,
        batch_size: int,
        train: bool,
        seed: int,
        rank: int,
        world_size: int,
        device: torch.device | str,
        transform: Transform | None = None,
    ) -> None:
        super().__init__()
        self.gather = gather
        self.labels = labels.to(device=device, dtype=torch.int64)
        self.n = int(labels.shape[0])
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.transform = transform
        if train:
            self._len = train_batches(self.n, batch_size, world_size)
            self.num_samples = self._len * batch_size
        else:
            self._chunks = eval_chunks(self.n, batch_size, rank, world_size)
            self._len = len(self._chunks)
            self.num_samples = sum(b - a for a, b in self._chunks)

    def __len__(self) -> int:
        return self._len

    def batch_indices(self) -> list[torch.Tensor]:
        """This rank's index tensors (on the loader's device) for the current epoch, from batch 0."""
        if not self.train:
            return [torch.arange(a, b, device=self.device) for a, b in self._chunks]
        # Drawn on the CPU (bit-identical on every machine and rank), copied once per epoch.
        perm = torch.randperm(self.n, generator=make_generator(derive_seed(self.seed, self.epoch, _PERM_TAG), "cpu"))
        perm = perm.to(self.device)
        gb = self.batch_size * self.world_size
        off = self.rank * self.batch_size
        return [perm[k * gb + off : k * gb + off + self.batch_size] for k in range(self._len)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self.batch_indices()
        for k in range(self.start_batch, len(batches)):
            idx = batches[k]
            x = self.gather(idx)
            if self.transform is not None:
                gen = make_generator(derive_seed(self.seed, self.epoch, self.rank, k, _AUG_TAG), self.device)
                x = self.transform(x, gen)
            yield x, self.labels[idx]


class StreamLoader(Loader):
    """Batches assembled from a stream of ``(sample, label)`` pairs (CPU tensors).

    ``open_stream(epoch)`` returns this rank's stream for the epoch, already shuffled (train) and
    split between ranks. ``len`` assumes the round-robin split of ``num_total`` samples that
    ``datasets.distributed.split_dataset_by_node`` uses when the shard count is not a multiple of
    ``world_size`` (single-file data sets such as CIFAR): rank ``r`` gets samples ``r, r+W, ...``.
    Training stops after ``len(self)`` batches so all ranks run the same number of steps.
    """

    def __init__(
        self,
        open_stream: Callable[[int], Iterable[tuple[torch.Tensor, int]]],
        num_total: int,
        *,
        batch_size: int,
        train: bool,
        seed: int,
        rank: int,
        world_size: int,
        device: torch.device | str,
        transform: Transform | None = None,
    ) -> None:
        super().__init__()
        self.open_stream = open_stream
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.rank = rank
        self.device = torch.device(device)
        self.transform = transform
        local = len(range(rank, num_total, world_size))
        if train:
            self._len = (num_total // world_size) // batch_size
            self.num_samples = self._len * batch_size
        else:
            self._len = math.ceil(local / batch_size)
            self.num_samples = local

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        stream = iter(self.open_stream(self.epoch))
        for _ in range(self.start_batch * self.batch_size):
            if next(stream, None) is None:
                return
        for k in range(self.start_batch, self._len):
            xs, ys = [], []
            for sample in stream:
                xs.append(sample[0])
                ys.append(sample[1])
                if len(xs) == self.batch_size:
                    break
            if not xs or (self.train and len(xs) < self.batch_size):
                return
            x = torch.stack(xs).to(self.device, non_blocking=True)
            if self.transform is not None:
                gen = make_generator(derive_seed(self.seed, self.epoch, self.rank, k, _AUG_TAG), self.device)
                x = self.transform(x, gen)
            yield x, torch.tensor(ys, dtype=torch.int64, device=self.device)


class SparseSequences:
    """Spike-count sequences ``[N, T, F]`` stored as per-sample event lists (CSR), densified per batch.

    ``offsets`` int64 ``[N+1]``; ``steps``/``channels`` int16 ``[E]`` hold one entry per spike
    (a count of c at one (t, f) is c repeated entries). SHD's 8,156 training samples would take
    5.7 GB as dense float32 ``[N, 250, 700]``; as events they take ~4 B per spike.
    """

    def __init__(self, offsets: torch.Tensor, steps: torch.Tensor, channels: torch.Tensor, T: int, F: int) -> None:
        self.offsets, self.steps, self.channels, self.T, self.F = offsets, steps, channels, T, F

    def to(self, device: torch.device | str) -> SparseSequences:
        return SparseSequences(self.offsets.to(device), self.steps.to(device), self.channels.to(device), self.T, self.F)

    def state(self) -> dict:
        return {"offsets": self.offsets, "steps": self.steps, "channels": self.channels, "T": self.T, "F": self.F}

    @classmethod
    def from_state(cls, s: dict) -> SparseSequences:
        return cls(s["offsets"], s["steps"], s["channels"], s["T"], s["F"])

    @classmethod
    def from_dense(cls, counts: Iterable[torch.Tensor], T: int, F: int) -> SparseSequences:
        """From per-sample integer count tensors ``[T, F]``."""
        offsets, steps, chans = [0], [], []
        for c in counts:
            nz = c.nonzero()
            rep = c[nz[:, 0], nz[:, 1]].long()
            steps.append(torch.repeat_interleave(nz[:, 0], rep))
            chans.append(torch.repeat_interleave(nz[:, 1], rep))
            offsets.append(offsets[-1] + int(rep.sum()))
        cat = (lambda xs: torch.cat(xs).to(torch.int16)) if steps else (lambda xs: torch.zeros(0, dtype=torch.int16))
        return cls(torch.tensor(offsets, dtype=torch.int64), cat(steps), cat(chans), T, F)

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        """Dense float32 counts ``[len(idx), T, F]`` of the samples ``idx`` (on the data's device)."""
        start = self.offsets[idx]
        lengths = self.offsets[idx + 1] - start
        total = int(lengths.sum())
        out = torch.zeros(idx.numel() * self.T * self.F, dtype=torch.float32, device=idx.device)
        if total:
            row = torch.repeat_interleave(torch.arange(idx.numel(), device=idx.device), lengths, output_size=total)
            first = torch.cumsum(lengths, 0) - lengths
            pos = start[row] + torch.arange(total, device=idx.device) - first[row]
            flat = (row * self.T + self.steps[pos].long()) * self.F + self.channels[pos].long()
            out.index_add_(0, flat, torch.ones(total, dtype=torch.float32, device=idx.device))
        return out.view(idx.numel(), self.T, self.F)


def fingerprint_files(paths: Iterable[str | Path], *extra: object) -> str:
    """Short hash of file names, sizes and mtimes plus ``extra`` settings: the cache key of a source."""
    h = hashlib.sha256()
    for p in sorted(str(p) for p in paths):
        st = os.stat(p)
        h.update(f"{os.path.basename(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(repr(extra).encode())
    return h.hexdigest()[:16]


def cached(path: Path, build: Callable[[], dict], *, rank: int = 0) -> dict:
    """Load ``path`` (a ``torch.save`` dict) or build it and write it atomically.

    With ``torch.distributed`` initialised, rank 0 builds while the other ranks wait, so a data set
    is decoded once per machine rather than once per rank.
    """
    dist = torch.distributed if torch.distributed.is_available() and torch.distributed.is_initialized() else None
    if dist is not None and rank != 0:
        dist.barrier()
    if path.exists():
        data = torch.load(path, map_location="cpu", weights_only=True)
    else:
        data = build()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(data, tmp)
        os.replace(tmp, path)
    if dist is not None and rank == 0:
        dist.barrier()
    return data
