"""Data pipeline: every loader on tiny files in the real on-disk formats, sharding, order, resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import data_fixtures as fx
from asgl.train.data import DataConfig, DataFormatError, DataNotFoundError, build_data
from asgl.train.data.loader import SparseSequences, StreamLoader, TensorLoader, eval_chunks

REPO = Path(__file__).resolve().parents[1]

needs_datasets = pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import datasets"], capture_output=True).returncode != 0,
    reason="datasets not installed",
)


def cfg(tmp_path, **kw) -> DataConfig:
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    return DataConfig(**kw)


def epoch(loader, e=0, start=0):
    loader.set_epoch(e, start)
    return [(x.clone(), y.clone()) for x, y in loader]


def unnormalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return torch.round((x * s + m) * 255).to(torch.uint8)


# ---------------------------------------------------------------------------------- config, import


@pytest.mark.e2e
def test_import_without_datasets():
    # None in sys.modules makes any `import datasets` / `import h5py` raise ImportError.
    code = (
        "import sys; sys.modules['datasets'] = sys.modules['h5py'] = None; "
        "import asgl.train.data; asgl.train.data.DataConfig(name='shd')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    code = "import sys, asgl.train.data; assert 'datasets' not in sys.modules and 'h5py' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"name": "mnist"}, "data.name"),
        ({"batch_size": 0}, "data.batch_size"),
        ({"eval_batch_size": -1}, "data.eval_batch_size"),
        ({"crop_pad": -1}, "data.crop_pad"),
        ({"frames": 0}, "data.frames"),
        ({"resolution": 0, "name": "cifar10_dvs"}, "data.resolution"),
        ({"roll": 2}, "data.roll"),
        ({"flip": "yes"}, "data.flip"),
        ({"name": "shd", "streaming": True}, "data.streaming"),
        ({"name": "shd", "shd_max_time": 0.0}, "data.shd_max_time"),
        ({"hub_id": "cifar10"}, "data.hub_id"),
    ],
)
def test_config_validation_names_the_key(kw, key):
    with pytest.raises(ValueError, match=key):
        DataConfig(**kw)


def test_batch_size_must_divide_by_world_size(tmp_path):
    with pytest.raises(ValueError, match="data.batch_size"):
        build_data(cfg(tmp_path, batch_size=10), T=1, seed=0, rank=0, world_size=3)


# ---------------------------------------------------------------------------------- loader logic


def _index_loader(n, b, train, rank=0, world=1, seed=0):
    ids = torch.arange(n)
    return TensorLoader(lambda idx, _: ids[idx], ids, batch_size=b, train=train, seed=seed, rank=rank,
                        world_size=world, device="cpu")


@pytest.mark.parametrize("n, b, world", [(103, 8, 2), (50, 7, 3), (17, 4, 1)])
def test_shards_disjoint_and_test_exactly_once(n, b, world):
    trains = [_index_loader(n, b, True, r, world) for r in range(world)]
    seen = torch.cat([x for ld in trains for x, _ in epoch(ld, 3)])
    assert seen.unique().numel() == seen.numel() == (n // (b * world)) * b * world
    assert len({len(ld) for ld in trains}) == 1
    tests = [_index_loader(n, b, False, r, world) for r in range(world)]
    seen = torch.cat([x for ld in tests for x, _ in epoch(ld)])
    assert sorted(seen.tolist()) == list(range(n))
    assert len({len(ld) for ld in tests}) == 1
    assert all(0 < x.numel() <= b for ld in tests for x, _ in epoch(ld))


def test_test_chunks_cover_in_order():
    chunks = [c for r in range(3) for c in eval_chunks(100, 8, r, 3)]
    assert sorted(chunks) == sorted(set(chunks))
    assert sum(b - a for a, b in chunks) == 100


def test_order_is_function_of_seed_and_epoch():
    a = torch.cat([x for x, _ in epoch(_index_loader(64, 8, True), 1)])
    b = torch.cat([x for x, _ in epoch(_index_loader(64, 8, True), 1)])
    c = torch.cat([x for x, _ in epoch(_index_loader(64, 8, True), 2)])
    d = torch.cat([x for x, _ in epoch(_index_loader(64, 8, True, seed=1), 1)])
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)
    assert torch.equal(a.sort().values, c.sort().values)


def test_sparse_sequences_gather_matches_dense():
    g = torch.Generator().manual_seed(0)
    dense = [torch.randint(0, 3, (5, 7), generator=g) * (torch.rand(5, 7, generator=g) < 0.3) for _ in range(6)]
    dense[2].zero_()  # an empty sample
    seq = SparseSequences.from_dense(dense, 5, 7)
    idx = torch.tensor([4, 2, 0, 4])
    assert torch.equal(seq.gather(idx), torch.stack([dense[i] for i in idx.tolist()]).float())


def _random_counts(n, T, F, seed=0):
    """``n`` integer count tensors ``[T, F]`` of assorted densities; sample 3 is empty."""
    g = torch.Generator().manual_seed(seed)
    out = [torch.randint(0, 4, (T, F), generator=g) * (torch.rand(T, F, generator=g) < (i % 5) / 5) for i in range(n)]
    out[3].zero_()
    return out


def test_sparse_gather_sized_on_the_host():
    T, F, n = 6, 11, 37
    dense = _random_counts(n, T, F)
    seq = SparseSequences.from_dense(dense, T, F)
    cases = [torch.randperm(n, generator=torch.Generator().manual_seed(1))[:16], torch.tensor([5]),
             torch.tensor([3, 3]), torch.tensor([8, 3, 8, 0])]  # a batch of one, an all-empty batch, repeats
    for idx in cases:
        ref = torch.stack([dense[i] for i in idx.tolist()]).float()
        assert torch.equal(seq.gather(idx), ref) and torch.equal(seq.gather(idx, idx.clone()), ref)
    with pytest.raises(ValueError, match="host_idx"):
        seq.gather(cases[0], cases[0][:3])
    # On the meta device any read of a device value (.item(), int(), .tolist(), a copy to the CPU)
    # raises, so this runs only if the step sizes every batch from CPU-side data, as on a GPU
    # it must to avoid a sync per batch.
    meta = seq.to("meta")
    out = meta.gather(cases[0].to("meta"), cases[0])
    assert out.device.type == "meta" and out.shape == (16, T, F)
    labels = torch.arange(n) % 7
    for is_train in (True, False):
        ld = TensorLoader(meta.gather, labels, batch_size=8, train=is_train, seed=0, rank=0, world_size=1,
                          device="meta")
        got = epoch(ld, 1)
        assert len(got) == len(ld) == (4 if is_train else 5)
        assert all(x.device.type == "meta" and x.shape[1:] == (T, F) and x.shape[0] == y.shape[0] for x, y in got)


def _round_robin_stream(samples, rank, world):
    """An ``open_stream`` giving rank ``rank`` samples ``rank, rank + world, ...`` (shuffled per epoch)."""
    def open_stream(epoch):
        order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(epoch)).tolist()
        return [samples[i] for i in order][rank::world]

    return open_stream


def _stream_loaders(n, b, is_train, world, short_by=0):
    samples = [(torch.full((2,), float(i)), i) for i in range(n)]
    loaders = []
    for r in range(world):
        opener = _round_robin_stream(samples, r, world)
        if short_by:
            opener = (lambda o: lambda e: o(e)[:-short_by])(opener)
        loaders.append(StreamLoader(opener, n, batch_size=b, train=is_train, seed=0, rank=r, world_size=world,
                                    device="cpu"))
    return loaders


@pytest.mark.parametrize("n, b, world", [(11, 5, 2), (103, 8, 3), (50, 7, 4), (17, 4, 1), (24, 4, 2)])
def test_stream_ranks_run_equal_batches(n, b, world):
    for is_train in (True, False):
        loaders = _stream_loaders(n, b, is_train, world)
        runs = [epoch(ld, 2) for ld in loaders]
        assert len({len(ld) for ld in loaders}) == 1  # every rank the same number of steps
        assert all(len(run) == len(ld) for run, ld in zip(runs, loaders, strict=True))
        assert all(0 < y.numel() <= b for run in runs for _, y in run)
        seen = torch.cat([y for run in runs for _, y in run])
        assert seen.unique().numel() == seen.numel() == sum(ld.num_samples for ld in loaders)
        if is_train:
            assert all(y.numel() == b for run in runs for _, y in run) and len(loaders[0]) == (n // world) // b
        else:
            assert sorted(seen.tolist()) == list(range(n))  # every test sample exactly once
    tail = epoch(loaders[0], 2, start=1)  # resuming from batch 1 gives the tail
    assert all(torch.equal(a[1], t[1]) for a, t in zip(runs[0][1:], tail, strict=True))


def test_stream_shorter_than_its_share_raises():
    for is_train in (True, False):
        ld = _stream_loaders(24, 4, is_train, 2, short_by=4)[1]
        with pytest.raises(DataFormatError, match="rank 1's stream ended after 8 samples.*24 samples over 2"):
            epoch(ld)


_CACHED_WORKER = r"""
import json, sys
from datetime import timedelta
from pathlib import Path
import torch
import torch.distributed as dist
from asgl.train.data.loader import DataFormatError, cached

rank, tmp = int(sys.argv[1]), Path(sys.argv[2])
dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=2,
                        timeout=timedelta(seconds=20))
report = {}

def good():
    if rank != 0:
        raise AssertionError("only rank 0 builds")
    return {"x": torch.arange(5)}

def bad():
    if rank != 0:
        raise AssertionError("only rank 0 builds")
    raise DataFormatError("shd_train.h5: no spikes/times")

report["good"] = cached(tmp / "good.pt", good, rank=rank)["x"].tolist()
try:
    cached(tmp / "bad.pt", bad, rank=rank)
    report["bad"] = "returned"
except Exception as e:
    report["bad"] = f"{type(e).__name__}: {e}"
dist.destroy_process_group()
print(json.dumps(report))
"""


@pytest.mark.e2e
@pytest.mark.multiproc
def test_cached_failure_reaches_every_rank(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_CACHED_WORKER)
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(tmp_path)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    reports = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=90)
            assert p.returncode == 0, err[-2000:]
            reports.append(__import__("json").loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rep in reports:
        assert rep["good"] == [0, 1, 2, 3, 4]
        assert rep["bad"] == "DataFormatError: shd_train.h5: no spikes/times"
    assert not (tmp_path / "bad.pt").exists()


# ---------------------------------------------------------------------------------- images


def _cifar_like(root: Path, name: str, n_train=40, n_test=13):
    """Hub-layout files of ``name`` with identifiable images; returns (train images, test images)."""
    spec = {
        "cifar10": ("plain_text", "img", 32, 3, "test", 10),
        "cifar100": ("cifar100", "img", 32, 3, "test", 100),
        "tiny_imagenet": ("data", "image", 64, 3, "valid", 200),
    }[name]
    folder, col, size, ch, test_split, classes = spec
    out = {}
    for split, n, start in (("train", n_train, 0), (test_split, n_test, 1000)):
        ims = fx.id_images(n, size, ch, start=start, seed=start)
        if name == "tiny_imagenet" and split == "train":
            ims[3] = ims[3][..., 0].copy()  # a grayscale image among RGB ones, as in the real set
        labels = [(i * 7) % classes for i in range(n)]
        cols = {"label": labels}
        if name == "cifar100":
            cols = {"fine_label": labels, "coarse_label": [v % 20 for v in labels]}
        # Tiny-ImageNet's hub files carry a hash suffix: data/train-00000-of-00001-<hash>.parquet
        fname = f"{split}-00000-of-00001" + ("-abc123" if name == "tiny_imagenet" else "") + ".parquet"
        fx.write_hub_parquet(root / folder / fname, ims, cols, image_column=col)
        out[split] = (ims, labels)
    return out


@needs_datasets
@pytest.mark.parametrize("name", ["cifar10", "cifar100", "tiny_imagenet"])
def test_image_hub_layout_roundtrip(tmp_path, name):
    from asgl.train.data.images import IMAGE_SPECS

    src = _cifar_like(tmp_path / name, name)
    spec = IMAGE_SPECS[name]
    b = build_data(cfg(tmp_path, name=name, root=str(tmp_path / name), batch_size=8, eval_batch_size=5), T=2, seed=0)
    got = (b.num_train, b.num_test, b.num_classes, b.in_channels, b.input_kind)
    assert got == (40, 13, spec.num_classes, 3, "image")
    test_split = "valid" if name == "tiny_imagenet" else "test"
    ims, labels = src[test_split]
    xs, ys = zip(*epoch(b.test))
    x = unnormalise(torch.cat(xs), spec.mean, spec.std)
    assert torch.equal(torch.cat(ys), torch.tensor(labels))
    assert torch.equal(x, torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2))
    # the grayscale training image comes out as RGB with three equal channels
    seen = {}
    for xb, _ in epoch(b.train):
        for im in unnormalise(xb, spec.mean, spec.std):
            seen[fx.image_id(im)] = im
    if name == "tiny_imagenet" and 3 in seen:
        assert torch.equal(seen[3][0], seen[3][1]) and torch.equal(seen[3][1], seen[3][2])


@needs_datasets
def test_cifar100_coarse_labels(tmp_path):
    _cifar_like(tmp_path / "c100", "cifar100")
    b = build_data(cfg(tmp_path, name="cifar100", root=str(tmp_path / "c100"), label_column="coarse_label",
                       batch_size=8, eval_batch_size=8), T=2, seed=0)
    assert b.num_classes == 20
    assert int(torch.cat([y for _, y in epoch(b.test)]).max()) < 20


@needs_datasets
@pytest.mark.parametrize("n, b, world", [(11, 5, 2), (103, 8, 3), (17, 4, 1)])
def test_stream_cache_reads_once_and_resumes_exactly(n, b, world):
    """With the memory cache the stream is read and decoded once (epoch 0); later epochs gather from
    memory, each train epoch a fresh permutation of the rank's share, test in stream order; a fresh
    loader (a resumed process) started past epoch 0 rebuilds the cache from epoch 0's stream and
    yields the very same batches, from any batch on."""
    samples = [(torch.full((2,), float(i)), i) for i in range(n)]
    for is_train in (True, False):
        for r in range(world):
            opened = []
            base = _round_robin_stream(samples, r, world)

            def opener(e, base=base, opened=opened):
                opened.append(e)
                return base(e)

            kw = dict(batch_size=b, train=is_train, seed=0, rank=r, world_size=world, device="cpu", sample_bytes=8)
            cached = StreamLoader(opener, n, cache_bytes=2**20, **kw)
            assert cached.caches and cached.cache_nbytes == 8 * len(range(r, n, world))
            runs = [epoch(cached, e) for e in range(3)]
            again = epoch(cached, 0)  # epoch 0 from the cache: the streamed batches
            assert opened == [0]  # read once
            assert all(torch.equal(a[1], c[1]) for a, c in zip(again, runs[0], strict=True))
            share = {label for _, label in base(0)}  # the rank's rows of epoch 0's stream
            for run in runs:
                seen = torch.cat([y for _, y in run]).tolist()
                assert len(seen) == len(set(seen)) == cached.num_samples and set(seen) <= share
                assert all(torch.equal(x[:, 0], y.float()) for x, y in run)  # samples stay with their labels
            if is_train:
                assert [y.tolist() for _, y in runs[1]] != [y.tolist() for _, y in runs[2]]
            else:
                assert all([y.tolist() for _, y in run] == [y.tolist() for _, y in runs[0]] for run in runs)
            resumed = StreamLoader(base, n, cache_bytes=2**20, **kw)
            for got, want in ((epoch(resumed, 2), runs[2]), (epoch(StreamLoader(base, n, cache_bytes=2**20, **kw), 2,
                                                                    start=1), runs[2][1:])):
                assert len(got) == len(want)
                assert all(torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]) for a, c in zip(got, want))
            # off (no budget), or a share over the budget: every epoch streams
            opened.clear()
            off = StreamLoader(opener, n, cache_bytes=0, **kw)
            over = StreamLoader(base, n, cache_bytes=8 * len(share) - 1, **kw)
            assert not off.caches and not over.caches and off.cache_nbytes == 0
            plain = StreamLoader(base, n, **kw)
            assert [y.tolist() for _, y in epoch(off, 2)] == [y.tolist() for _, y in epoch(plain, 2)]
            epoch(off, 1)
            assert opened == [2, 1]


def test_streaming_matches_materialised_and_shards(tmp_path):
    root = tmp_path / "c10"
    _cifar_like(root, "cifar10", n_train=37, n_test=11)
    mat = build_data(cfg(tmp_path, name="cifar10", root=str(root), batch_size=4, eval_batch_size=4), T=1, seed=3)
    stream = build_data(cfg(tmp_path, name="cifar10", root=str(root), batch_size=4, eval_batch_size=4,
                            streaming=True, shuffle_buffer=8), T=1, seed=3)
    # test split, one rank: same samples in the same order
    for (xm, ym), (xs, ys) in zip(epoch(mat.test), epoch(stream.test), strict=True):
        assert torch.equal(xm, xs) and torch.equal(ym, ys)
    # train split: same samples (orders differ: buffer shuffle vs permutation); epochs differ
    from asgl.train.data.images import IMAGE_SPECS

    spec = IMAGE_SPECS["cifar10"]

    def ids(batches):
        return [fx.image_id(im) for x, _ in batches for im in unnormalise(x, spec.mean, spec.std)]

    s0, s1 = ids(epoch(stream.train, 0)), ids(epoch(stream.train, 1))
    assert len(s0) == len(set(s0)) == 36 and set(s0) <= set(range(37))
    assert s0 != s1 and s0 == ids(epoch(stream.train, 0))
    assert len(ids(epoch(mat.train, 0))) == 36
    # two streaming ranks: disjoint shards; test covers every sample once
    ranks = [build_data(cfg(tmp_path, name="cifar10", root=str(root), batch_size=4, eval_batch_size=4,
                            streaming=True), T=1, seed=3, rank=r, world_size=2) for r in range(2)]
    tr = [ids(epoch(b.train, 2)) for b in ranks]
    assert not set(tr[0]) & set(tr[1]) and len(tr[0]) == len(tr[1]) == 2 * len(ranks[0].train)
    te = sorted(i for b in ranks for i in ids(epoch(b.test)))
    assert te == list(range(1000, 1011))


@needs_datasets
def test_resume_yields_the_tail(tmp_path):
    root = tmp_path / "c10"
    _cifar_like(root, "cifar10", n_train=40, n_test=4)
    kw = dict(name="cifar10", root=str(root), batch_size=8, crop_pad=4, flip=True, cutout=8)
    for streaming in (False, True):
        b = build_data(cfg(tmp_path, streaming=streaming, **kw), T=1, seed=5)
        full = epoch(b.train, 2)
        tail = epoch(b.train, 2, start=3)
        assert len(full) == 5 and len(tail) == 2
        for (xf, yf), (xt, yt) in zip(full[3:], tail, strict=True):
            assert torch.equal(xf, xt) and torch.equal(yf, yt)


@needs_datasets
def test_augmentation_reproducible(tmp_path):
    root = tmp_path / "c10"
    _cifar_like(root, "cifar10", n_train=16, n_test=4)
    c = cfg(tmp_path, name="cifar10", root=str(root), batch_size=16, crop_pad=4, flip=True, cutout=8)
    b1, b2 = build_data(c, T=1, seed=1), build_data(c, T=1, seed=1)
    plain = build_data(cfg(tmp_path, name="cifar10", root=str(root), batch_size=16), T=1, seed=1)
    (x1, y1), (x2, y2), (x0, y0) = epoch(b1.train, 0)[0], epoch(b2.train, 0)[0], epoch(plain.train, 0)[0]
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(y0, y1) and not torch.equal(x0, x1)  # same order, augmented pixels
    assert not torch.equal(epoch(b1.train, 0, 0)[0][0], epoch(b1.train, 1, 0)[0][0])


@needs_datasets
@pytest.mark.parametrize("streaming", [False, True])
def test_test_split_is_only_normalised(tmp_path, streaming):
    root = tmp_path / "c10"
    _cifar_like(root, "cifar10", n_train=8, n_test=6)
    kw = dict(name="cifar10", root=str(root), batch_size=8, eval_batch_size=4, streaming=streaming)
    plain = build_data(cfg(tmp_path, **kw), T=1, seed=0)
    aug = build_data(cfg(tmp_path, crop_pad=2, flip=True, cutout=4, autoaugment=True, **kw), T=1, seed=0)
    ref = epoch(plain.test)
    for e in (0, 1):
        for (xa, ya), (xp, yp) in zip(epoch(aug.test, e), ref, strict=True):
            assert torch.equal(xa, xp) and torch.equal(ya, yp)
    assert not torch.equal(epoch(aug.train)[0][0], epoch(plain.train)[0][0])  # while training is augmented


@needs_datasets
def test_streaming_ranks_equal_with_uneven_shards(tmp_path):
    # Two parquet shards of 30 and 7 rows over two ranks: a split by shard would give rank 0
    # 30 samples and rank 1 only 7, so the ranks would run different numbers of steps.
    root = tmp_path / "c10"
    for split, sizes in (("train", (30, 7)), ("test", (8, 3))):
        start = 0
        for j, n in enumerate(sizes):
            fx.write_hub_parquet(root / "plain_text" / f"{split}-{j:05d}-of-{len(sizes):05d}.parquet",
                                 fx.id_images(n, 32, 3, start=start, seed=start), {"label": [0] * n})
            start += n
    ranks = [build_data(cfg(tmp_path, name="cifar10", root=str(root), batch_size=8, eval_batch_size=4,
                            streaming=True), T=1, seed=0, rank=r, world_size=2) for r in range(2)]

    def ids(batches):
        from asgl.train.data.images import IMAGE_SPECS

        spec = IMAGE_SPECS["cifar10"]
        return [fx.image_id(im) for x, _ in batches for im in unnormalise(x, spec.mean, spec.std)]

    train_runs = [epoch(d.train, 1) for d in ranks]
    assert [len(t) for t in train_runs] == [len(d.train) for d in ranks] == [4, 4]  # (37 // 2) // 4
    ids0, ids1 = ids(train_runs[0]), ids(train_runs[1])
    assert len(ids0) == len(ids1) == 16 and not set(ids0) & set(ids1) and set(ids0) | set(ids1) <= set(range(37))
    test_runs = [epoch(d.test) for d in ranks]
    assert [len(t) for t in test_runs] == [len(d.test) for d in ranks] == [3, 3]  # ceil(ceil(11 / 2) / 2)
    assert sorted(ids(test_runs[0]) + ids(test_runs[1])) == list(range(11))


@needs_datasets
def test_images_decoded_once_then_cached(tmp_path, monkeypatch):
    from asgl.train.data import images

    root = tmp_path / "c10"
    _cifar_like(root, "cifar10", n_train=8, n_test=4)
    c = cfg(tmp_path, name="cifar10", root=str(root), batch_size=4)
    first = epoch(build_data(c, T=1, seed=0).test)
    assert len(list((tmp_path / "cache").glob("cifar10-*.pt"))) == 2

    def fail(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(images, "materialise", fail)
    again = epoch(build_data(c, T=1, seed=0).test)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))


@pytest.mark.e2e
@needs_datasets
@pytest.mark.parametrize("source", ["auto", "hub"])
def test_unreachable_hub_raises_data_not_found(tmp_path, source):
    """No local files and the hub offline: one message naming both and a command that exists."""
    code = (
        "import sys\n"
        "from asgl.train.data import DataConfig, DataNotFoundError, build_data\n"
        "try:\n"
        f"    cfg = DataConfig(name='cifar10', source={source!r}, root={str(tmp_path / 'none')!r}, "
        f"cache_dir={str(tmp_path)!r})\n"
        "    build_data(cfg, T=1, seed=0)\n"
        "except DataNotFoundError as e:\n"
        "    print(e)\n"
        "    sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "the hub copy 'uoft-cs/cifar10' could not be loaded" in r.stdout
    assert ("no local files under" in r.stdout) == (source == "auto")
    assert f"python -m asgl.train.data.prepare cifar10 --root {tmp_path / 'none'}" in r.stdout
    assert "huggingface-cli" not in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == (["hf"] if (tmp_path / "hf").exists() else [])


def _silent_server():
    """A local TCP server that accepts connections and never answers (a hub behind a black hole)."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server


def test_hub_probe_gives_up_within_its_time():
    import time

    from asgl.train.data.images import HUB_PROBE_S, hub_reachable

    with _silent_server() as server:
        start = time.monotonic()
        assert not hub_reachable(f"http://127.0.0.1:{server.getsockname()[1]}")
        assert time.monotonic() - start < HUB_PROBE_S + 1.0
    closed = _silent_server()
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: refused at once
    assert not hub_reachable(f"http://127.0.0.1:{port}")


@needs_datasets
def test_a_run_without_data_or_hub_stops_at_once(tmp_path):
    """No local files, HF_HUB_OFFLINE unset and a hub that never answers: the run stops after the
    probe with the one error message, without the hub client's retries (which alone sleep
    1 + 2 + 4 + 8 + 8 = 23 s, a "Retrying in ..." line each) and without writing the run folder."""
    import os
    import time

    with _silent_server() as server:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                                                                 "TRITON_INTERPRET")}
        env.update(HF_ENDPOINT=f"http://127.0.0.1:{server.getsockname()[1]}", HF_HOME=str(tmp_path / "hf_home"))
        # the same process's imports alone, timed beside it: what the machine's load adds to both
        start = time.monotonic()
        subprocess.run([sys.executable, "-c", "import datasets, asgl.train.run, asgl.train.data"], cwd=REPO, env=env,
                       check=True, timeout=120)
        imports = time.monotonic() - start
        start = time.monotonic()
        r = subprocess.run([sys.executable, str(REPO / "train" / "run.py"), "--config",
                            str(REPO / "configs" / "cifar10_resnet18_t4.yaml"), f"--train.out_dir={tmp_path / 'runs'}",
                            f"--data.cache_dir={tmp_path / 'cache'}", f"--data.root={tmp_path / 'none'}"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - start
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: data set 'cifar10': no local files under "), r.stderr
    assert "is unreachable (no answer within 3 s), and the cache holds no copy" in r.stderr
    assert "Retry" not in r.stderr and "Traceback" not in r.stderr
    # past the imports: the probe's 3 s and the config, not the hub client's 23 s of retries
    assert elapsed - imports < 10, (elapsed, imports)
    assert not (tmp_path / "runs").exists()


@needs_datasets
@pytest.mark.parametrize("streaming", [False, True])
def test_hub_source_loads_through_datasets_like_local_files(tmp_path, streaming):
    """data.source=hub goes through ``datasets.load_dataset(hub_id)``; a local folder in the hub
    layout stands in for the hub (offline): the same samples as data.source=local."""
    root = tmp_path / "c10"
    _cifar_like(root, "cifar10", n_train=21, n_test=9)
    # The hub's dataset card reports the split sizes (streaming counts on them), as uoft-cs/cifar10's does.
    (root / "README.md").write_text("---\ndataset_info:\n  splits:\n  - name: train\n    num_examples: 21\n"
                                    "  - name: test\n    num_examples: 9\n---\n")
    kw = dict(name="cifar10", batch_size=4, eval_batch_size=4, streaming=streaming)
    hub = build_data(cfg(tmp_path, source="hub", hub_id=str(root), **kw), T=1, seed=1)
    local = build_data(cfg(tmp_path, source="local", root=str(root), **kw), T=1, seed=1)
    kept = ", streaming (decoded once: 0 MiB kept in memory per rank after epoch 0, data.stream_cache_gb)"
    assert hub.origin == f"hub {root}" + (kept if streaming else "")
    assert local.origin == f"local files under {root}" + (kept if streaming else "")
    for (xh, yh), (xl, yl) in zip(epoch(hub.test), epoch(local.test), strict=True):
        assert torch.equal(xh, xl) and torch.equal(yh, yl)
    # auto: the local folder when it holds the files, else the hub id
    auto = build_data(cfg(tmp_path, root=str(root), **kw), T=1, seed=1)
    assert auto.origin.startswith("local files")
    auto = build_data(cfg(tmp_path, root=str(tmp_path / "none"), hub_id=str(root), **kw), T=1, seed=1)
    assert auto.origin.startswith(f"hub {root}")


@needs_datasets
@pytest.mark.parametrize("stream_cache_gb", [8.0, 0])
def test_streaming_workers_give_the_same_batches(tmp_path, stream_cache_gb):
    """Decoding in worker processes changes nothing: the same batches, in the same order, per epoch
    and from a resumed position (epochs after the first from the memory cache, or decoded again)."""
    root = tmp_path / "c10"
    _cifar_like(root, "cifar10", n_train=37, n_test=11)
    kw = dict(name="cifar10", root=str(root), batch_size=4, eval_batch_size=4, streaming=True, shuffle_buffer=8,
              stream_cache_gb=stream_cache_gb)
    inline = build_data(cfg(tmp_path, workers=0, **kw), T=1, seed=3)
    pooled = build_data(cfg(tmp_path, workers=2, **kw), T=1, seed=3)
    for a, b in ((epoch(inline.train, 1), epoch(pooled.train, 1)),
                 (epoch(inline.train, 2, 3), epoch(pooled.train, 2, 3)),
                 (epoch(inline.test), epoch(pooled.test))):
        assert len(a) == len(b) > 0
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    pooled.train.close()
    pooled.test.close()


@needs_datasets
def test_wrong_columns_message(tmp_path):
    root = tmp_path / "c10"
    for split in ("train", "test"):
        fx.write_hub_parquet(root / "plain_text" / f"{split}-00000-of-00001.parquet", fx.id_images(4, 32, 3),
                             {"labels": [0, 1, 2, 3]}, image_column="image")
    with pytest.raises(DataFormatError, match=r"missing column\(s\) \['img', 'label'\].*found \['image', 'labels'\]"):
        build_data(cfg(tmp_path, name="cifar10", root=str(root), batch_size=2), T=1, seed=0)


@needs_datasets
@pytest.mark.parametrize("streaming", [False, True])
def test_non_integer_labels_message(tmp_path, streaming):
    root = tmp_path / "c10"
    for split in ("train", "test"):
        fx.write_hub_parquet(root / "plain_text" / f"{split}-00000-of-00001.parquet", fx.id_images(4, 32, 3),
                             {"label": ["cat", "dog", "cat", "dog"]})
    with pytest.raises(DataFormatError, match=r"data set 'cifar10' \(.*train-00000-of-00001.parquet.*\): "
                                              r"column 'label' holds '(cat|dog)'; expected int labels"):
        data = build_data(cfg(tmp_path, name="cifar10", root=str(root), batch_size=2, streaming=streaming),
                          T=1, seed=0)
        epoch(data.train)


def test_missing_images_message(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        build_data(cfg(tmp_path, name="cifar10", source="local", root=str(tmp_path / "nowhere")), T=1, seed=0)
    msg = str(err.value)
    assert "plain_text/train-*.parquet" in msg and str(tmp_path / "nowhere") in msg
    assert f"python -m asgl.train.data.prepare cifar10 --root {tmp_path / 'nowhere'}" in msg
    assert "data.source=hub" in msg
    assert isinstance(err.value, FileNotFoundError)


@needs_datasets
def test_bundled_digits(tmp_path):
    b = build_data(cfg(tmp_path, batch_size=100, eval_batch_size=120), T=4, seed=0)
    assert (b.num_train, b.num_test, b.num_classes, b.in_channels, b.input_kind) == (1437, 360, 10, 1, "image")
    xs, ys = zip(*epoch(b.test))
    y = torch.cat(ys)
    assert torch.cat(xs).shape == (360, 1, 8, 8)
    assert torch.bincount(y, minlength=10).min() >= 35  # stratified split
    raw = unnormalise(torch.cat(xs), (0.3054,), (0.3760,))
    assert raw.max() == 255 and raw.min() == 0
    assert len(b.train) == 14 and epoch(b.train)[0][0].shape == (100, 1, 8, 8)


# ---------------------------------------------------------------------------------- SHD


def test_shd_binning(tmp_path):
    T, max_time = 10, 1.0
    times = [
        np.array([0.0, 0.05, 0.15, 0.15, 0.999, 1.2]),  # 1.2 s: after the last bin, dropped
        np.array([]),  # an empty sample
        np.array([0.5, 0.25]),
    ]
    units = [np.array([0, 1, 699, 699, 5, 3]), np.array([]), np.array([10, 20])]
    for split, labels in (("train", [3, 0, 19]), ("test", [1, 2, 4])):
        fx.write_shd_h5(tmp_path / f"shd_{split}.h5", times, units, labels)
    b = build_data(cfg(tmp_path, name="shd", root=str(tmp_path), batch_size=3, eval_batch_size=3,
                       shd_max_time=max_time, frames=T), T=250, seed=0)
    assert (b.num_classes, b.in_channels, b.input_kind, b.num_train) == (20, 700, "sequence", 3)
    (x, y), = epoch(b.test)
    assert x.shape == (3, T, 700) and x.dtype == torch.float32
    assert torch.equal(y, torch.tensor([1, 2, 4]))
    expect = torch.zeros(3, T, 700)
    # float16 times cast to float32: 0.05 -> 0.04998779 (bin 0), 0.15 -> 0.1500244 (bin 1), 0.999 -> 0.9990234 (bin 9)
    for t, u in ((0, 0), (0, 1), (1, 699), (1, 699), (9, 5)):
        expect[0, t, u] += 1
    expect[2, 5, 10] = 1
    expect[2, 2, 20] = 1
    assert torch.equal(x, expect)
    assert x[1].sum() == 0


def test_shd_missing_message(tmp_path):
    pattern = (r"(?s)shd_train.h5.*not found under.*spikes/times.*wget https://zenkelab.org/datasets/shd_train.h5.gz"
               r".*Or: python -m asgl.train.data.prepare shd --root ")
    with pytest.raises(DataNotFoundError, match=pattern):
        build_data(cfg(tmp_path, name="shd", root=str(tmp_path)), T=250, seed=0)


# ---------------------------------------------------------------------------------- events


def test_events_to_frames_split_by_count():
    from asgl.train.data.events import events_to_frames

    ev = {"t": np.array([1, 2, 3, 4, 5, 6, 7]), "x": np.array([0, 0, 2, 3, 1, 4, 4]),
          "y": np.array([0, 0, 2, 3, 1, 4, 4]), "p": np.array([0, 1, 0, 1, 1, 0, 0])}
    fr = events_to_frames(ev, 3, size=8)  # 7 events over 3 frames: event i -> frame floor(3i/7) = 0,0,0,1,1,2,2
    assert fr.shape == (3, 2, 8, 8) and fr.sum() == 7
    assert fr[0, 0, 0, 0] == 1 and fr[0, 1, 0, 0] == 1 and fr[0, 0, 2, 2] == 1  # t=1, 2, 3
    assert fr[1, 1, 3, 3] == 1 and fr[1, 1, 1, 1] == 1  # t=4, 5
    assert fr[2, 0, 4, 4] == 2  # t=6, 7
    assert events_to_frames({k: v[:0] for k, v in ev.items()}, 3, size=8).sum() == 0


def test_cifar10_dvs_aedat2(tmp_path):
    from asgl.train.data.events import CIFAR10_DVS_CLASSES, read_aedat2_cifar10dvs

    t = np.array([10, 20, 30, 40])
    x, y, p = np.array([0, 127, 5, 64]), np.array([3, 0, 127, 64]), np.array([1, 0, 1, 0])
    path = fx.write_aedat2_cifar10dvs(tmp_path / "one.aedat", t, x, y, p)
    ev = read_aedat2_cifar10dvs(path)
    for k, v in (("t", t), ("x", x), ("y", y), ("p", p)):
        assert np.array_equal(ev[k], v), k
    root = tmp_path / "c10dvs"
    for label, c in enumerate(CIFAR10_DVS_CLASSES):
        for i in range(10):  # 10 files per class -> 9 train, 1 test
            n = 4 + i
            fx.write_aedat2_cifar10dvs(root / c / f"cifar10_{c}_{i}.aedat", np.arange(n), np.full(n, label),
                                       np.full(n, i), np.arange(n) % 2)
    b = build_data(cfg(tmp_path, name="cifar10_dvs", root=str(root), batch_size=10, eval_batch_size=10,
                       frames=2), T=10, seed=0)
    assert (b.num_train, b.num_test, b.num_classes, b.in_channels, b.input_kind) == (90, 10, 10, 2, "event")
    (xt, yt), = epoch(b.test)
    assert xt.shape == (10, 2, 2, 128, 128) and torch.equal(yt, torch.arange(10))
    for k in range(10):
        frame_x = xt[k].sum(dim=(0, 1, 2)).nonzero().flatten()
        assert frame_x.tolist() == [k]  # every event of class k sits at x = k
        n = int(xt[k].sum())
        assert xt[k, :, 0].sum() == (n + 1) // 2 and xt[k, :, 1].sum() == n // 2  # p = 0, 1, 0, ...
    b48 = build_data(cfg(tmp_path, name="cifar10_dvs", root=str(root), batch_size=10, eval_batch_size=10,
                         frames=3, resolution=48), T=10, seed=0)
    assert epoch(b48.train)[0][0].shape == (10, 3, 2, 48, 48)
    # a different split seed gives a different (still 9:1 per class) split
    other = build_data(cfg(tmp_path, name="cifar10_dvs", root=str(root), batch_size=10, eval_batch_size=10,
                           frames=2, split_seed=1), T=10, seed=0)
    (xo, _), = epoch(other.test)
    assert other.num_test == 10 and not torch.equal(xo, xt)


def test_event_augmentation(tmp_path):
    from asgl.train.data.events import CIFAR10_DVS_CLASSES

    root = tmp_path / "c10dvs"
    rng = np.random.default_rng(0)
    for c in CIFAR10_DVS_CLASSES:
        for i in range(2):
            fx.write_aedat2_cifar10dvs(root / c / f"cifar10_{c}_{i}.aedat", np.arange(50), rng.integers(0, 128, 50),
                                       rng.integers(0, 128, 50), rng.integers(0, 2, 50))
    kw = dict(name="cifar10_dvs", root=str(root), batch_size=10, frames=2)
    plain = build_data(cfg(tmp_path, **kw), T=2, seed=0)
    aug = build_data(cfg(tmp_path, flip=True, roll=5, **kw), T=2, seed=0)
    (x0, y0), (x1, y1) = epoch(plain.train)[0], epoch(aug.train)[0]
    assert torch.equal(y0, y1) and not torch.equal(x0, x1)
    assert torch.equal(x0.sum(dim=(3, 4)), x1.sum(dim=(3, 4)))  # flip and cyclic roll keep every count
    assert torch.equal(epoch(aug.test)[0][0], epoch(plain.test)[0][0])  # no augmentation at test time


def test_cifar10_dvs_missing_message(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"airplane.*\n.*<class>/cifar10_<class>_<i>.aedat.*\n.*figshare"):
        build_data(cfg(tmp_path, name="cifar10_dvs", root=str(tmp_path)), T=10, seed=0)


def _gesture(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    trials = {"train": ["user01_fluorescent", "user02_led"], "test": ["user24_natural"]}
    for split, names in trials.items():
        (root / f"trials_to_{split}.txt").write_text("".join(f"{n}.aedat\n" for n in names) + "\n")
    for j, name in enumerate(trials["train"] + trials["test"]):
        rows, packets = [], []
        for c in range(1, 12):  # gesture c occupies [c·1000, c·1000 + 500) µs, c + j events at x = c, y = j
            n = c + j
            t = c * 1000 + np.arange(n) * 10
            words = fx.aedat3_polarity_words(np.full(n, c), np.full(n, j), np.arange(n) % 2)
            packets.append((1, t, words))
            rows.append((c, c * 1000, c * 1000 + 500))
        # an invalid polarity event inside gesture 1 and a special-event packet: both skipped
        packets.append((1, np.array([1005]), fx.aedat3_polarity_words([100], [100], [1], valid=[0])))
        packets.append((0, np.array([1010]), np.array([0x12345678])))
        fx.write_aedat3(root / f"{name}.aedat", packets)
        fx.write_gesture_labels(root / f"{name}_labels.csv", rows)


def test_aedat3_reader(tmp_path):
    from asgl.train.data.events import read_aedat3

    t = np.array([1, 2, 3])
    path = fx.write_aedat3(tmp_path / "a.aedat", [
        (1, t, fx.aedat3_polarity_words([0, 127, 64], [5, 6, 127], [1, 0, 1])),
        (1, np.array([9]), fx.aedat3_polarity_words([1], [1], [1], valid=[0])),
    ])
    ev = read_aedat3(path)
    assert ev["t"].tolist() == [1, 2, 3] and ev["x"].tolist() == [0, 127, 64]
    assert ev["y"].tolist() == [5, 6, 127] and ev["p"].tolist() == [1, 0, 1]


def test_dvs128_gesture(tmp_path):
    root = tmp_path / "DvsGesture"
    _gesture(root)
    b = build_data(cfg(tmp_path, name="dvs128_gesture", root=str(root), batch_size=2, eval_batch_size=11,
                       frames=4), T=16, seed=0)
    assert (b.num_train, b.num_test, b.num_classes, b.in_channels) == (22, 11, 11, 2)
    (x, y), = epoch(b.test)
    assert x.shape == (11, 4, 2, 128, 128) and torch.equal(y, torch.arange(11))
    j = 2  # the test trial's index
    for c in range(1, 12):
        n = c + j
        assert x[c - 1, :, :, j, c].sum() == n == x[c - 1].sum()  # all at (y=j, x=c)
        per_frame = torch.bincount(torch.arange(n) * 4 // n, minlength=4).float()  # split by event count
        assert torch.equal(x[c - 1].sum(dim=(1, 2, 3)), per_frame)
        assert x[c - 1, :, 1].sum() == n // 2  # polarity alternates 0, 1, 0, ...


def test_gesture_missing_message(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"trials_to_train.txt not found.*\n.*AEDAT 3.1"):
        build_data(cfg(tmp_path, name="dvs128_gesture", root=str(tmp_path)), T=16, seed=0)


# ---------------------------------------------------------------------------------- audio


def test_read_wav_float32_and_pcm(tmp_path):
    from asgl.train.data.audio import read_wav

    s = np.sin(np.linspace(0, 20, 1001)).astype(np.float32) * 0.5
    x, rate = read_wav(fx.write_wav_float32(tmp_path / "f.wav", s, 22050))
    assert rate == 22050 and np.array_equal(x, s)
    x, rate = read_wav(fx.write_wav_pcm16(tmp_path / "p.wav", np.stack([s, -s], 1), 16000, channels=2))
    assert rate == 16000 and np.abs(x).max() < 1e-4  # the two channels cancel when averaged
    x, _ = read_wav(fx.write_wav_pcm16(tmp_path / "m.wav", s))
    assert np.abs(x - s).max() <= 1 / 32767


def test_mel_and_delta_coding():
    from asgl.train.data.audio import delta_encode, mel_filterbank

    fb = mel_filterbank(16, 22050)
    assert fb.shape == (513, 16) and fb.min() >= 0 and torch.allclose(fb.max(0).values, torch.ones(16), atol=0.2)
    assert torch.all(fb.argmax(0).diff() > 0)  # centres increase
    m = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [-1.0, 0.0]])
    z = (m - m.mean()) / m.std()
    q = torch.floor(z / 0.5)
    s = delta_encode(m, 0.5)
    assert s.shape == (4, 4)
    prev = torch.cat([torch.zeros(1, 2), q[:-1]])
    assert torch.equal(s[:, :2] - s[:, 2:], (q - prev).long())
    assert torch.all((s[:, :2] == 0) | (s[:, 2:] == 0))


def test_medley_solos(tmp_path):
    rng = np.random.default_rng(0)
    def clip(label):
        return (rng.standard_normal(4096) * 0.1 * np.sin(np.arange(4096) * (label + 1) / 50)).astype(np.float32)

    clips = [(subset, label, clip(label))
             for subset, n in (("training", 2), ("validation", 1), ("test", 1)) for label in range(8) for _ in range(n)]
    fx.write_medley(tmp_path / "medley", clips)
    b = build_data(cfg(tmp_path, name="medley_solos", root=str(tmp_path / "medley"), batch_size=4, eval_batch_size=8,
                       n_mels=8, frames=20), T=500, seed=0)
    assert (b.num_train, b.num_test, b.num_classes, b.in_channels, b.input_kind) == (16, 8, 8, 16, "sequence")
    (x, y), = epoch(b.test)
    assert x.shape == (8, 20, 16) and torch.equal(y, torch.arange(8))
    assert x.min() >= 0 and x.sum() > 0 and torch.equal(x, x.round())


def test_medley_missing_message(tmp_path):
    pattern = r"Medley-solos-DB_metadata.csv not found.*\n.*<subset>-<instrument_id>_<uuid4>.wav.*\n.*zenodo"
    with pytest.raises(DataNotFoundError, match=pattern):
        build_data(cfg(tmp_path, name="medley_solos", root=str(tmp_path)), T=500, seed=0)


# ---------------------------------------------------------------------------------- device


@pytest.mark.gpu
@needs_datasets
def test_cuda_batches_match_cpu(tmp_path):
    root = tmp_path / "c10"
    _cifar_like(root, "cifar10", n_train=24, n_test=6)
    c = cfg(tmp_path, name="cifar10", root=str(root), batch_size=8)
    cpu, gpu = build_data(c, T=1, seed=2), build_data(c, T=1, seed=2, device="cuda")
    pairs = zip(epoch(cpu.train, 1) + epoch(cpu.test), epoch(gpu.train, 1) + epoch(gpu.test), strict=True)
    for (xc, yc), (xg, yg) in pairs:
        assert xg.is_cuda and yg.is_cuda
        assert torch.equal(yc, yg.cpu()) and torch.allclose(xc, xg.cpu(), atol=1e-6, rtol=0)
    dense = [torch.eye(5, 7, dtype=torch.int64) * 2, torch.zeros(5, 7, dtype=torch.int64)]
    seq = SparseSequences.from_dense(dense, 5, 7)
    idx = torch.tensor([1, 0, 0])
    assert torch.equal(seq.to("cuda").gather(idx.cuda()).cpu(), seq.gather(idx))


@pytest.mark.gpu
def test_cuda_steps_do_not_sync():
    # Every per-batch operation of the sequence and stream loaders, run with CUDA's sync debug
    # mode set to raise: a device→host read or a blocking copy in the step fails here.
    T, F, n = 9, 13, 41
    dense = _random_counts(n, T, F, seed=3)
    seq = SparseSequences.from_dense(dense, T, F)
    labels = torch.arange(n) % 5
    samples = [(torch.full((3,), float(i)), i) for i in range(n)]
    loaders = []
    for device in ("cpu", "cuda"):
        gpu_seq = seq.to(device)
        kw = dict(seed=4, rank=1, world_size=2, device=device)
        loaders.append([TensorLoader(gpu_seq.gather, labels, batch_size=6, train=t, **kw) for t in (True, False)]
                       + [StreamLoader(_round_robin_stream(samples, 1, 2), n, batch_size=6, train=t, **kw)
                          for t in (True, False)])
    want = [epoch(ld, 2) for ld in loaders[0]]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = [epoch(ld, 2) for ld in loaders[1]]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for w, g in zip(want, got, strict=True):
        assert len(w) == len(g) > 0
        for (xw, yw), (xg, yg) in zip(w, g, strict=True):
            assert xg.is_cuda and torch.equal(xg.cpu(), xw) and torch.equal(yg.cpu(), yw)


# ---------------------------------------------------------------------------------- prepare


def test_prepare_verifies_what_is_in_place(tmp_path, capsys):
    from asgl.train.data.prepare import main

    _cifar_like(tmp_path / "c10", "cifar10", n_train=5, n_test=3)
    assert main(["cifar10", "--root", str(tmp_path / "c10")]) == 0
    out = capsys.readouterr().out
    assert "train: 5 images in 1 parquet file(s) | test: 3 images" in out and "--data.root=" in out


def test_prepare_fetches_image_sets_from_the_hub(tmp_path, monkeypatch, capsys):
    """The hub download (replaced by a copy of local files in the hub layout) lands in --root in the
    layout the trainer reads, and is verified; an unreachable hub is a clear error."""
    import huggingface_hub

    from asgl.train.data.prepare import main

    _cifar_like(tmp_path / "remote", "cifar10", n_train=6, n_test=2)
    calls = []

    def fake_snapshot_download(repo_id, *, repo_type, local_dir, allow_patterns):
        import shutil

        calls.append((repo_id, repo_type, tuple(allow_patterns)))
        shutil.copytree(tmp_path / "remote", local_dir, dirs_exist_ok=True)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert main(["cifar10", "--root", str(tmp_path / "c10")]) == 0
    assert calls == [("uoft-cs/cifar10", "dataset", ("plain_text/train-*.parquet", "plain_text/test-*.parquet"))]
    assert "train: 6 images" in capsys.readouterr().out

    def offline(*a, **k):
        raise huggingface_hub.errors.LocalEntryNotFoundError("outgoing traffic has been disabled")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    assert main(["cifar100", "--root", str(tmp_path / "c100")]) == 1
    err = capsys.readouterr().err
    assert "could not download uoft-cs/cifar100 from the Hugging Face hub" in err
    assert not (tmp_path / "c100").exists()


def test_prepare_downloads_shd_and_verifies_it(tmp_path, capsys):
    import gzip

    pytest.importorskip("h5py")
    from asgl.train.data.prepare import fetch_shd, main

    served = tmp_path / "served"
    served.mkdir()
    for split, n in (("train", 3), ("test", 2)):
        h5 = fx.write_shd_h5(tmp_path / f"shd_{split}.h5", [np.array([0.1], np.float16)] * n,
                             [np.array([5], np.uint16)] * n, list(range(n)))
        (served / f"shd_{split}.h5.gz").write_bytes(gzip.compress(h5.read_bytes()))
    fetch_shd(tmp_path / "shd", base_url=served.as_uri())
    assert (tmp_path / "shd" / "shd_train.h5").read_bytes() == (tmp_path / "shd_train.h5").read_bytes()
    assert sorted(p.name for p in (tmp_path / "shd").iterdir()) == ["shd_test.h5", "shd_train.h5"]
    assert main(["shd", "--root", str(tmp_path / "shd")]) == 0
    assert "train: 3 samples in shd_train.h5 | test: 2 samples" in capsys.readouterr().out
    from asgl.train.data.prepare import PrepareError

    with pytest.raises(PrepareError, match="gunzip -c shd_train.h5.gz"):
        fetch_shd(tmp_path / "shd2", base_url=(tmp_path / "nothing").as_uri())
    assert list((tmp_path / "shd2").iterdir()) == []


@pytest.mark.parametrize("name, step", [("cifar10_dvs", "figshare.com"), ("dvs128_gesture", "DvsGesture.tar.gz"),
                                        ("medley_solos", "zenodo.org/records/3464194")])
def test_prepare_prints_the_manual_steps(tmp_path, capsys, name, step):
    from asgl.train.data.prepare import main

    assert main([name, "--root", str(tmp_path / name)]) == 1
    err = capsys.readouterr().err
    assert step in err and f"python -m asgl.train.data.prepare {name} --root {tmp_path / name}" in err
    assert not (tmp_path / name).exists()


# ------------------------------------------------------------------------------ input description


@pytest.mark.parametrize("name", ["digits", "cifar10", "cifar100", "tiny_imagenet", "cifar10_dvs", "dvs128_gesture",
                                  "shd", "medley_solos"])
def test_every_data_set_describes_its_input(name):
    """What an export carries (asgl.preprocess's description): valid, consistent with the classes and
    channels the trainer builds the network with, and with the shapes its loaders produce."""
    from asgl.preprocess import check_input_spec
    from asgl.train.data import describe_input

    classes, channels, spec = describe_input(DataConfig(name=name), T=5)
    assert check_input_spec(spec) == spec
    assert spec["class_names"] is None or len(spec["class_names"]) == classes
    expected = {"digits": [1, 8, 8], "cifar10": [3, 32, 32], "cifar100": [3, 32, 32], "tiny_imagenet": [3, 64, 64],
                "cifar10_dvs": [5, 2, 128, 128], "dvs128_gesture": [5, 2, 128, 128], "shd": [5, 700],
                "medley_solos": [5, 128]}[name]
    assert spec["shape"] == expected and channels == expected[0 if spec["kind"] == "image" else 1]
    coarse = describe_input(DataConfig(name="cifar100", label_column="coarse_label"), T=1)
    assert coarse[0] == 20 and coarse[2]["class_names"][0] == "aquatic_mammals"


def test_digits_class_names_are_the_bundled_files():
    """The names an export records for the digits are the ClassLabel names of the bundled parquet files."""
    import json

    import pyarrow.parquet as pq

    from asgl.train.data import describe_input

    meta = pq.read_schema(REPO / "data" / "digits" / "plain_text" / "test-00000-of-00001.parquet").metadata
    names = json.loads(meta[b"huggingface"])["info"]["features"]["label"]["names"]
    assert describe_input(DataConfig(name="digits"), T=4)[2]["class_names"] == names
