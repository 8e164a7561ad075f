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
- no host syncs per batch: the epoch's indices are copied to the device once per epoch, and a
  batch whose size depends on the data (a sparse spike train) is sized from CPU-side copies of the
  indices and offsets, never by reading a device tensor (``.item()``/``int()`` on CUDA waits for
  every queued kernel and stalls the step).
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import math
import os
import pickle
import struct
import weakref
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


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (on the CPU) copied to ``device`` without waiting for the device's queued work.

    A copy from pageable memory synchronises the CUDA stream; from pinned memory it does not (the
    pinned block is not reused before the copy has run).
    """
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


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
# A batch gather: (indices on the device, the same indices on the CPU) -> raw batch on the device.
Gather = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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

    ``gather(idx, host_idx)`` maps a batch's int64 indices, given both on ``device`` (``idx``) and
    on the CPU (``host_idx``, the same values), to the raw batch on ``device``: e.g. ``x[idx]`` for
    dense uint8 images, or a densified sparse spike train, which needs the host copy to size its
    buffers without a sync. ``transform`` then augments/normalises it.
    """

    def __init__(
        self,
        gather: Gather,
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

    def epoch_indices(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches for the current epoch, from batch 0: ``(idx on the device, idx on the CPU)``."""
        if not self.train:
            return [(torch.arange(a, b, device=self.device), torch.arange(a, b)) for a, b in self._chunks]
        # Drawn on the CPU (bit-identical on every machine and rank), copied once per epoch.
        perm = torch.randperm(self.n, generator=make_generator(derive_seed(self.seed, self.epoch, _PERM_TAG), "cpu"))
        dev = to_device(perm, self.device)
        gb = self.batch_size * self.world_size
        off = self.rank * self.batch_size
        cuts = [slice(k * gb + off, k * gb + off + self.batch_size) for k in range(self._len)]
        return [(dev[c], perm[c]) for c in cuts]

    def batch_indices(self) -> list[torch.Tensor]:
        """This rank's index tensors (on the loader's device) for the current epoch, from batch 0."""
        return [idx for idx, _ in self.epoch_indices()]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self.epoch_indices()
        for k in range(self.start_batch, len(batches)):
            idx, host_idx = batches[k]
            x = self.gather(idx, host_idx)
            if self.transform is not None:
                gen = make_generator(derive_seed(self.seed, self.epoch, self.rank, k, _AUG_TAG), self.device)
                x = self.transform(x, gen)
            yield x, self.labels[idx]


class StreamLoader(Loader):
    """Batches assembled from a stream of samples.

    ``open_stream(epoch)`` returns this rank's stream for the epoch: the epoch's stream of all
    ``num_total`` samples (shuffled for training, identical on every rank) split **round-robin**,
    rank ``r`` taking samples ``r, r+W, r+2W, ...``, so it holds ``L_r = len(range(r, N, W))``
    samples, ``floor(N/W)`` or ``ceil(N/W)``. The split must not follow the shards of the source
    (``datasets.distributed.split_dataset_by_node`` does that when the shard count is a multiple of
    ``W``): shards of unequal size would give the ranks different step counts and hang DDP.

    The stream yields ``(sample, label)`` pairs of CPU tensors, or, with ``decode``, raw items that
    ``decode(items) -> (uint8 array [B, ...], labels)`` turns into one batch. ``decode`` runs in
    ``workers`` processes (0: inline), up to ``2 · workers`` batches ahead of the training loop and
    handed back in stream order, so the batches are the same whatever the number of workers.

    From the known total alone every rank then runs the same number of batches:

    - train: ``floor(N/W) // B`` full batches of ``B`` (the rest of the stream is left unread);
    - test: ``nb = ceil(ceil(N/W) / B)`` batches, rank ``r`` cutting its ``L_r`` samples in order
      into ``nb`` batches whose sizes differ by at most one (so at most ``B``); every sample is
      evaluated once.

    A stream shorter than that raises :class:`DataFormatError` rather than silently ending one
    rank's epoch early. Batches are copied to a CUDA device from pinned memory without blocking.

    Memory cache (``cache_bytes``, when this rank's ``L_r`` decoded samples of ``sample_bytes`` fit
    in it): each sample is decoded once. Epoch 0 streams as above and keeps what it decodes (with
    the rows after its last full batch, so the cache holds all ``L_r`` samples); every later epoch
    gathers from that CPU cache in an order that is a pure function of ``(seed, epoch, rank)``: for
    training a fresh permutation of the rank's share each epoch (the first ``floor(N/W)//B · B``
    of it), for test (and epoch 0 again) the stream's order. A process that starts (or resumes)
    past epoch 0, or after an epoch 0 cut short, builds the cache from epoch 0's stream before its
    first cached epoch, so a resumed run sees exactly the batches of an uninterrupted one. Without
    the cache every epoch streams and decodes again.
    """

    def __init__(
        self,
        open_stream: Callable[[int], Iterable],
        num_total: int,
        *,
        batch_size: int,
        train: bool,
        seed: int,
        rank: int,
        world_size: int,
        device: torch.device | str,
        transform: Transform | None = None,
        decode: Callable[[list], tuple] | None = None,
        workers: int = 0,
        sample_bytes: int | None = None,
        cache_bytes: int = 0,
    ) -> None:
        super().__init__()
        self.open_stream = open_stream
        self.num_total = num_total
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.transform = transform
        self.decode = decode if decode is not None else _stack_pairs
        self.workers = workers if decode is not None else 0
        self._pool = None
        if train:
            self._sizes = [batch_size] * ((num_total // world_size) // batch_size)
        else:
            nb = math.ceil(math.ceil(num_total / world_size) / batch_size)
            base, extra = divmod(len(range(rank, num_total, world_size)), max(nb, 1))
            # Empty batches (only possible with B = 1) are dropped, as in eval_chunks.
            self._sizes = [s for s in (base + (k < extra) for k in range(nb)) if s]
        self._len = len(self._sizes)
        self.num_samples = sum(self._sizes)
        self.share = len(range(rank, num_total, world_size))  # L_r
        self.caches = bool(sample_bytes) and 0 < self.share * sample_bytes <= cache_bytes
        self.cache_nbytes = self.share * (sample_bytes or 0) if self.caches else 0
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None  # (samples, labels) on the CPU

    def __len__(self) -> int:
        return self._len

    def _raw_batches(self, sizes: list[int], start: int, epoch: int, tail: bool = False) -> Iterator[list]:
        """Epoch ``epoch``'s stream cut into ``sizes[start:]`` (the first ``start`` batches read and
        skipped); with ``tail``, then the rest of the stream in batches of at most ``B``."""
        stream = iter(self.open_stream(epoch))
        skip = sum(sizes[:start])
        read = sum(1 for _ in itertools.islice(stream, skip))
        for k in range(start, len(sizes)):
            batch = list(itertools.islice(stream, sizes[k]))
            read += len(batch)
            if len(batch) < sizes[k]:
                raise DataFormatError(
                    f"rank {self.rank}'s stream ended after {read} samples; a round-robin split of "
                    f"{self.num_total} samples over {self.world_size} rank(s) gives it {self.share}"
                )
            yield batch
        while tail and (batch := list(itertools.islice(stream, self.batch_size))):
            yield batch

    def _decoded(self, raw: Iterator[list]) -> Iterator[tuple]:
        if self.workers == 0:
            yield from map(self.decode, raw)
            return
        if self._pool is None:
            import concurrent.futures
            import multiprocessing

            # Forked, as torch's DataLoader workers are: no re-import of the main script; the
            # workers only decode bytes (no CUDA, no torch ops).
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            self._pool = concurrent.futures.ProcessPoolExecutor(self.workers,
                                                                mp_context=multiprocessing.get_context(method))
            # Shut down before the interpreter tears its modules down (at exit or when unused).
            weakref.finalize(self, self._pool.shutdown, cancel_futures=True)
        pending: collections.deque = collections.deque()
        try:
            for items in raw:
                pending.append(self._pool.submit(self.decode, items))
                if len(pending) >= 2 * self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # an epoch cut short (a stop, an error): drop the read-ahead
                future.cancel()

    def _batch(self, k: int, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_device(torch.as_tensor(x), self.device)
        y = to_device(torch.as_tensor(y, dtype=torch.int64), self.device)
        if self.transform is not None:
            gen = make_generator(derive_seed(self.seed, self.epoch, self.rank, k, _AUG_TAG), self.device)
            x = self.transform(x, gen)
        return x, y

    def _keep(self, parts: list[tuple]) -> None:
        """Epoch 0's decoded batches (all ``L_r`` samples, in stream order) become the cache."""
        x = torch.cat([torch.as_tensor(xb) for xb, _ in parts])
        y = torch.cat([torch.as_tensor(yb, dtype=torch.int64) for _, yb in parts])
        if x.shape[0] != self.share:
            raise DataFormatError(f"rank {self.rank}'s stream holds {x.shape[0]} samples; a round-robin split "
                                  f"of {self.num_total} samples over {self.world_size} rank(s) gives it {self.share}")
        self._cache = (x, y)

    def _cached_order(self) -> torch.Tensor:
        """Positions in the cache of this epoch's samples, batch after batch."""
        if not self.train or self.epoch == 0:  # the cache is in epoch 0's stream order
            return torch.arange(self.num_samples)
        gen = make_generator(derive_seed(self.seed, self.epoch, self.rank, _PERM_TAG), "cpu")
        return torch.randperm(self.share, generator=gen)[: self.num_samples]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.caches and (self.epoch > 0 or self._cache is not None):
            if self._cache is None:  # started or resumed past epoch 0: decode epoch 0's rows once
                self._keep(list(self._decoded(self._raw_batches([], 0, 0, tail=True))))
            x_all, y_all = self._cache
            order = self._cached_order()
            offsets = [0, *itertools.accumulate(self._sizes)]
            for k in range(self.start_batch, self._len):
                idx = order[offsets[k]:offsets[k + 1]]
                yield self._batch(k, x_all[idx], y_all[idx])
            return
        keep = self.caches and self.start_batch == 0  # epoch 0, no cache yet
        parts: list[tuple] = []
        raw = self._raw_batches(self._sizes, self.start_batch, self.epoch, tail=keep)
        for k, (x, y) in enumerate(self._decoded(raw), start=self.start_batch):
            if keep:
                parts.append((x, y))
            if k < self._len:
                yield self._batch(k, x, y)
        if keep:  # the whole epoch ran (an epoch cut short keeps nothing)
            self._keep(parts)

    def close(self) -> None:
        """Stop the decoding workers (they also end with the process)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def _stack_pairs(batch: list) -> tuple[torch.Tensor, list[int]]:
    """``[(sample tensor, label), ...]`` -> ``(stacked samples, labels)``."""
    return torch.stack([sample for sample, _ in batch]), [label for _, label in batch]


class SparseSequences:
    """Spike-count sequences ``[N, T, F]`` stored as per-sample event lists (CSR), densified per batch.

    ``offsets`` int64 ``[N+1]``; ``steps``/``channels`` int16 ``[E]`` hold one entry per spike
    (a count of c at one (t, f) is c repeated entries). SHD's 8,156 training samples would take
    5.7 GB as dense float32 ``[N, 250, 700]``; as events they take ~4 B per spike.
    ``host_offsets`` is a CPU copy of ``offsets`` (8 B per sample) that sizes each batch on the host.
    """

    def __init__(self, offsets: torch.Tensor, steps: torch.Tensor, channels: torch.Tensor, T: int, F: int,
                 *, host_offsets: torch.Tensor | None = None) -> None:
        self.offsets, self.steps, self.channels, self.T, self.F = offsets, steps, channels, T, F
        self.host_offsets = offsets.cpu() if host_offsets is None else host_offsets

    def to(self, device: torch.device | str) -> SparseSequences:
        return SparseSequences(self.offsets.to(device), self.steps.to(device), self.channels.to(device), self.T, self.F,
                               host_offsets=self.host_offsets)

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

    def gather(self, idx: torch.Tensor, host_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Dense float32 counts ``[B, T, F]`` of the samples ``idx`` (int64 ``[B]`` on the data's device).

        With ``s_b = offsets[idx[b]]``, ``n_b = offsets[idx[b] + 1] - s_b`` and ``E = Σ_b n_b``::

            out[b, steps[s_b + j], channels[s_b + j]] += 1        for j < n_b

        ``E`` sizes the event tensors, so it is needed on the host. It is summed from ``host_idx``
        (the same indices on the CPU) and ``host_offsets``: reading it from the device would wait
        for every queued kernel, once per batch. Without ``host_idx`` the indices are copied to the
        CPU, which is such a sync when ``idx`` is on a GPU.
        """
        if host_idx is None:
            host_idx = idx.cpu()
        if host_idx.device.type != "cpu" or host_idx.shape != idx.shape:
            raise ValueError(f"host_idx must be a CPU tensor shaped like idx {tuple(idx.shape)}, "
                             f"got {tuple(host_idx.shape)} on {host_idx.device}")
        total = int((self.host_offsets[host_idx + 1] - self.host_offsets[host_idx]).sum())
        B, dev = idx.numel(), idx.device
        out = torch.zeros(B * self.T * self.F, dtype=torch.float32, device=dev)
        if total:
            start = self.offsets[idx]
            lengths = self.offsets[idx + 1] - start
            row = torch.repeat_interleave(lengths, output_size=total)  # [E] batch row of each event
            # event e of row b sits at start[b] + (e - first[b]), first[b] = Σ_{b' < b} n_b'
            shift = start - (torch.cumsum(lengths, 0) - lengths)
            pos = shift[row] + torch.arange(total, device=dev)
            flat = (row * self.T + self.steps[pos].long()) * self.F + self.channels[pos].long()
            out.index_add_(0, flat, torch.ones(total, dtype=torch.float32, device=dev))
        return out.view(B, self.T, self.F)


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

    With ``torch.distributed`` initialised, rank 0 loads or builds while the other ranks wait, so a
    data set is decoded once per machine rather than once per rank. Rank 0 then broadcasts whether
    that worked: if ``build`` raised (a missing or malformed file), every rank raises the same
    error instead of the others waiting forever for a rank that is gone.
    """
    dist = torch.distributed if torch.distributed.is_available() and torch.distributed.is_initialized() else None
    if dist is None:
        return _load_or_build(path, build)
    if rank == 0:
        try:
            data = _load_or_build(path, build)
        except Exception as e:
            dist.broadcast_object_list([_portable(e, path)], src=0)
            raise
        dist.broadcast_object_list([None], src=0)
        return data
    status: list[BaseException | None] = [None]
    dist.broadcast_object_list(status, src=0)
    if status[0] is not None:
        raise status[0]
    return _load_or_build(path, build)


def _load_or_build(path: Path, build: Callable[[], dict]) -> dict:
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    data = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)
    return data


def _portable(e: BaseException, path: Path) -> BaseException:
    """``e`` itself if it survives pickling (to be raised on the other ranks), else a RuntimeError."""
    try:
        return pickle.loads(pickle.dumps(e))
    except Exception:
        return RuntimeError(f"rank 0 failed to build {path}: {type(e).__name__}: {e}")
