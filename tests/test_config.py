"""The run config: parsing, coercion, includes, validation messages; every shipped config parses and
builds its network and data pipeline (on tiny generated data sets in the real file formats)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import data_fixtures as fx
from test_trainer import needs_datasets, write_tiny_digits
from asgl.train.config import (
    ConfigError, RunConfig, all_keys, build_config, parse_overrides, to_dict, to_yaml,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.relative_to(REPO / "configs").as_posix() for p in (REPO / "configs").rglob("*.yaml"))


# ------------------------------------------------------------------------------------ parsing


def test_overrides_both_spellings_and_types():
    ov = parse_overrides(["--model.T=6", "--optim.lr", "1e-3", "--train.compile=true", "--noise.milestones",
                          "[0.3, 0.7]", "--train.max_steps=none", "--data.root", "/x", "--model.learn-width=no"])
    cfg = build_config(None, ov)
    assert cfg.model.T == 6 and isinstance(cfg.model.T, int)
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)  # YAML 1.1 would keep "1e-3" a string
    assert cfg.train.compile == "default" and cfg.model.learn_width is False  # true: the former switch
    assert cfg.noise.milestones == (0.3, 0.7)
    assert cfg.train.max_steps is None and cfg.data.root == "/x"


def test_yaml_values_are_coerced_and_overrides_win(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  T: 3\n  width: 2\noptim:\n  weight_decay: 1e-4\nnoise:\n  milestones: [0.5]\n")
    cfg = build_config(p, {"model.T": "5"})
    assert cfg.model.T == 5 and cfg.model.width == 2.0 and isinstance(cfg.model.width, float)
    assert cfg.optim.weight_decay == 1e-4 and cfg.noise.milestones == (0.5,)


def test_base_include_merges_under_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("model:\n  T: 3\n  p: 0.3\noptim:\n  lr: 0.05\n")
    (tmp_path / "sub" / "child.yaml").write_text("base: ../base.yaml\nmodel:\n  p: 0.0\n")
    cfg = build_config(tmp_path / "sub" / "child.yaml")
    assert (cfg.model.T, cfg.model.p, cfg.optim.lr) == (3, 0.0, 0.05)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="include cycle"):
        build_config(tmp_path / "loop.yaml")


def test_resolved_yaml_round_trips():
    cfg = build_config(REPO / "configs" / "cifar10dvs_vggsnn_t10.yaml", {"train.seed": "7"})
    import yaml

    again = build_config(None, None, base=yaml.safe_load(to_yaml(cfg)))
    assert to_dict(again) == to_dict(cfg)
    assert len(all_keys()) == len(load_yaml_keys(to_yaml(RunConfig())))


def load_yaml_keys(text: str) -> dict:
    import yaml

    from asgl.train.config import flatten

    return flatten(yaml.safe_load(text))


@pytest.mark.parametrize("overrides, message", [
    ({"model.widht": "1"}, "unknown config key 'model.widht' (did you mean 'model.width'?)"),
    ({"optim.learning_rate": "1"}, "optim has: name, lr,"),
    ({"modle.T": "4"}, "did you mean 'model.T'?"),
    ({"model": "4"}, "model is a section"),
    ({"model.T": "four"}, "model.T: expected an integer, got 'four'"),
    ({"model.T": "2.5"}, "model.T: expected an integer"),
    ({"train.compile": "maybe"}, "train.compile must be one of none, default, reduce-overhead; got 'maybe'"),
    ({"noise.milestones": "0.3,x"}, "noise.milestones[1]: expected a number"),
    ({"model.T": "0"}, "model.T must be >= 1"),
    ({"optim.lr": "-0.1"}, "optim.lr must be > 0"),
    ({"optim.lr": "nan"}, "optim.lr must be > 0"),
    ({"model.p": "1.5"}, "model.p (the analog-mode probability) must be in [0, 1]"),
    ({"model.width": "0"}, "model.width (the relaxation width α) must be > 0"),
    ({"model.decay": "1"}, "model.decay (the leak λ) must be in (0, 1)"),
    ({"model.name": "resnet81"}, "model.name must be one of"),
    ({"model.surrogate": "sigmod"}, "did you mean 'sigmoid'?"),
    ({"train.mixed_precision": "fp8"}, "train.mixed_precision must be one of no, bf16, fp16"),
    ({"loss.name": "mse"}, "loss.name must be one of ce, tet"),
    ({"optim.schedule": "cyclic_cosine"}, "optim.cycle_epochs must be in [1, optim.epochs]"),
    ({"noise.milestones": "[1.5]"}, "noise.milestones must be fractions"),
    ({"data.name": "cifar"}, "data.name must be one of"),
    ({"data.batch_size": "0"}, "data.batch_size must be an integer > 0"),
    ({"train.run_name": "a/b"}, "train.run_name must be a plain folder name"),
    ({"data.name": "shd", "data.frames": "3", "model.T": "4"}, "data.frames (3) must equal model.T (4) for shd"),
    ({"data.name": "cifar10_dvs", "data.frames": "16", "model.T": "10"}, "data.frames (16) must equal model.T (10)"),
    ({"train.trackers": "[tensorboard, wandbb]"}, "train.trackers must be one of tensorboard, wandb"),
    ({"train.trackers": "[wandb, wandb]"}, "train.trackers must not repeat a tracker"),
    ({"optim.clip_grad_norm": "0"}, "optim.clip_grad_norm must be > 0 (or null)"),
    ({"loss.label_smoothing": "1"}, "loss.label_smoothing must be in [0, 1)"),
    ({"train.channels_last": "sometimes"}, "train.channels_last: expected true or false"),
    ({"data.source": "web"}, "data.source must be one of auto, local, hub"),
    ({"data.name": "shd", "data.source": "hub"}, "data.source must be auto or local for shd"),
    ({"data.workers": "-1"}, "data.workers must be null or an integer >= 0"),
])
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        build_config(None, overrides)
    assert message in str(e.value)


def test_every_key_has_a_one_line_description():
    from asgl.train.config import describe

    text = describe()
    assert list(text) == all_keys()
    assert not [key for key, line in text.items() if not line], "keys without a comment in their dataclass"
    assert text["optim.clip_grad_norm"].startswith("clip the global gradient norm")


def test_knob_defaults_and_values():
    cfg = build_config(None, {"train.trackers": "[tensorboard, wandb]", "optim.clip_grad_norm": "1.0",
                              "train.channels_last": "null", "loss.label_smoothing": "0.1"})
    assert cfg.train.trackers == ("tensorboard", "wandb") and cfg.optim.clip_grad_norm == 1.0
    assert cfg.train.channels_last is None and cfg.loss.label_smoothing == 0.1
    d = RunConfig()
    assert (d.train.trackers, d.optim.clip_grad_norm, d.loss.label_smoothing, d.data.source) == ((), None, 0.0, "auto")


def test_frames_may_follow_or_match_model_T():
    assert build_config(None, {"data.name": "shd", "model.T": "5"}).data.frames is None
    assert build_config(None, {"data.name": "dvs128_gesture", "data.frames": "5", "model.T": "5"}).data.frames == 5


def test_bad_command_lines():
    with pytest.raises(ConfigError, match="needs a value"):
        parse_overrides(["--model.T"])
    with pytest.raises(ConfigError, match="unexpected argument 'model.T=3'"):
        parse_overrides(["model.T=3"])
    with pytest.raises(ConfigError, match="config file not found"):
        build_config("no/such.yaml")


def test_lr_schedule_shapes():
    from asgl.train.run import lr_lambda

    cfg = build_config(None, {"optim.epochs": "4", "optim.warmup_epochs": "1"})
    f = lr_lambda(cfg, steps_per_epoch=10)
    assert [f(s) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]  # linear warmup over 10 steps
    assert f(10) == 1.0 and f(25) == pytest.approx(0.5) and f(40) == pytest.approx(0.0)
    cfg = build_config(None, {"optim.epochs": "4", "optim.schedule": "cyclic_cosine", "optim.cycle_epochs": "2"})
    f = lr_lambda(cfg, steps_per_epoch=10)
    assert f(0) == 1.0 and f(10) == pytest.approx(0.5) and f(20) == 1.0 and f(30) == pytest.approx(0.5)
    assert lr_lambda(build_config(None, {"optim.schedule": "none"}), 10)(123) == 1.0


# ------------------------------------------------------------------------- shipped configs


def _images(root: Path, name: str) -> None:
    folder, col, size, test_split, label = {
        "cifar10": ("plain_text", "img", 32, "test", "label"),
        "cifar100": ("cifar100", "img", 32, "test", "fine_label"),
        "tiny_imagenet": ("data", "image", 64, "valid", "label"),
    }[name]
    for split, n in (("train", 8), (test_split, 4)):
        fx.write_hub_parquet(root / folder / f"{split}-00000-of-00001.parquet", fx.id_images(n, size, 3),
                             {label: [i % 10 for i in range(n)]}, image_column=col)


def _cifar10_dvs(root: Path) -> None:
    from asgl.train.data.events import CIFAR10_DVS_CLASSES

    for label, c in enumerate(CIFAR10_DVS_CLASSES):
        for i in range(10):  # 9 train, 1 test per class
            n = 20
            fx.write_aedat2_cifar10dvs(root / c / f"cifar10_{c}_{i}.aedat", np.arange(n), (np.arange(n) * 7) % 128,
                                       np.full(n, 10 * label), np.arange(n) % 2)


def _gesture(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    trials = {"train": ["user01_fluorescent"], "test": ["user24_natural"]}
    for split, names in trials.items():
        (root / f"trials_to_{split}.txt").write_text("".join(f"{n}.aedat\n" for n in names))
    for j, name in enumerate(trials["train"] + trials["test"]):
        packets, rows = [], []
        for c in range(1, 12):
            t = c * 1000 + np.arange(8) * 10
            packets.append((1, t, fx.aedat3_polarity_words(np.full(8, 5 * c), np.full(8, j), np.arange(8) % 2)))
            rows.append((c, c * 1000, c * 1000 + 500))
        fx.write_aedat3(root / f"{name}.aedat", packets)
        fx.write_gesture_labels(root / f"{name}_labels.csv", rows)


def _shd(root: Path) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        times = [np.sort(rng.uniform(0, 1.4, 30)) for _ in range(4)]
        units = [rng.integers(0, 700, 30) for _ in range(4)]
        fx.write_shd_h5(root / f"shd_{split}.h5", times, units, [0, 5, 10, 19])


def _medley(root: Path) -> None:
    rng = np.random.default_rng(0)
    clips = [(subset, label, (0.1 * rng.standard_normal(8192)).astype(np.float32))
             for subset in ("training", "test") for label in range(4)]
    fx.write_medley(root, clips)


FIXTURES = {"digits": write_tiny_digits, "cifar10": lambda r: _images(r, "cifar10"),
            "cifar100": lambda r: _images(r, "cifar100"), "tiny_imagenet": lambda r: _images(r, "tiny_imagenet"),
            "cifar10_dvs": _cifar10_dvs, "dvs128_gesture": _gesture, "shd": _shd, "medley_solos": _medley}


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory):
    return tmp_path_factory.mktemp("data"), {}


@pytest.mark.e2e
@needs_datasets
@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_config_builds_model_and_data(name, data_roots):
    """Parse the shipped config, shrink it (T, batch), load its data set from a tiny fixture, run one
    training batch through its network and loss: shapes, classes and channels must all agree."""
    from asgl.train.data import build_data
    from asgl.train.run import build_model

    import asgl

    cfg = build_config(REPO / "configs" / name)
    base, made = data_roots
    root = base / cfg.data.name
    if cfg.data.name not in made:
        FIXTURES[cfg.data.name](root)
        made[cfg.data.name] = root
    image = cfg.data.name in ("digits", "cifar10", "cifar100", "tiny_imagenet")
    cfg = build_config(REPO / "configs" / name, {
        "data.root": str(root), "data.cache_dir": str(base / "cache"), "data.batch_size": "2",
        "data.eval_batch_size": "2", "model.T": "1" if image else "2", "data.frames": "none"})
    data = build_data(cfg.data, T=cfg.model.T, seed=0, rank=0, world_size=1, device="cpu")
    torch.manual_seed(0)
    model = build_model(cfg, data.num_classes, data.in_channels)
    lifs = asgl.neurons(model)
    assert lifs and all(m.surrogate == cfg.model.surrogate and m.p == cfg.model.p for m in lifs)
    assert all(torch.allclose(m.width, torch.tensor(cfg.model.width)) for m in lifs)
    bns = [m for m in model.modules() if isinstance(m, asgl.layers.TimeBatchNorm)]
    assert all(m.statistics == cfg.model.bn_statistics for m in bns)
    assert (cfg.model.bn_statistics == "per_step") == (cfg.data.name == "cifar10_dvs")  # the authors' DVS BN
    if name.startswith("width_sweep/") and name != "width_sweep/_base.yaml":
        return  # same network and data as _base.yaml, which runs the batch below
    data.train.set_epoch(0)
    x, y = next(iter(data.train))
    logits = model(x)
    assert logits.shape == (cfg.model.T, 2, data.num_classes)
    loss = asgl.mean_ce_loss(logits, y) if cfg.loss.name == "ce" else asgl.tet_loss(logits, y, lam=cfg.loss.tet_lambda)
    loss.backward()
    assert torch.isfinite(loss)
