"""Export of a run's checkpoint (python -m asgl.train.export) and asgl.load_pretrained: round trip to the
same logits, and bad inputs refused with one error line and nothing written."""

from __future__ import annotations

import json
import os

import pytest
import torch

nir = pytest.importorskip("nir", reason="the deploy extra: pip install 'asgl-snn[deploy]'")
pytest.importorskip("safetensors", reason="the deploy extra: pip install 'asgl-snn[deploy]'")

import asgl  # noqa: E402  (the skips above come first)
from asgl.export import save_pretrained  # noqa: E402
from asgl.train import checkpoint as ckpt_io  # noqa: E402
from asgl.train.config import build_config, to_dict  # noqa: E402
from asgl.train.export import main  # noqa: E402
from asgl.train.run import build_model  # noqa: E402


def _run_dir(tmp_path, name: str = "digits_cnn", T: int = 2, state_from=None, **model_keys):
    """A run folder as train/run.py leaves it: config.yaml and best.pt (trained-looking weights:
    random, with non-trivial BN statistics)."""
    cfg = build_config(None, {"model.name": name, "model.T": T, **{f"model.{k}": v for k, v in model_keys.items()}})
    torch.manual_seed(0)
    model = state_from or build_model(cfg, num_classes=10, in_channels=1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(0.0, 0.5)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  name: " + name + "\n")
    state = {"model": model.state_dict(), "optimizer": {}, "neuron_optimizer": None, "lr_scheduler": {},
             "noise": {}, "rng": [], "epoch": 1, "step_in_epoch": 0, "global_step": 1, "best_metric": 50.0,
             "world_size": 1, "config": to_dict(cfg)}
    ckpt_io.write_atomic(ckpt_io.serialize(state), run / "best.pt")
    return run, model


def test_safetensors_round_trip(tmp_path, capsys):
    run, model = _run_dir(tmp_path, thresh=0.8, reset="hard")
    out = tmp_path / "export"
    assert main([str(run), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o666 & ~umask}  # as open() creates files
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "digits_cnn" and config["T"] == 2 and config["neuron"]["thresh"] == 0.8
    assert config["input"]["shape"] == [1, 8, 8] and config["input"]["mean"] == [0.3054]
    loaded = asgl.load_pretrained(out, backend="torch")
    assert not loaded.training
    assert isinstance(loaded.preprocess, asgl.Preprocess) and loaded.preprocess.spec == config["input"]
    assert not any(k.startswith("preprocess") for k in loaded.state_dict())
    x = torch.randn(5, 1, 8, 8) * 2
    with torch.no_grad():
        expected = model.eval()(x)
        got = loaded(x)
    assert (expected != 0).any()
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # The fused neurons (under TRITON_INTERPRET=1 on a CPU, see conftest.py) read the same folder.
    fused = asgl.load_pretrained(out, backend="triton")
    assert {m.backend for m in asgl.neurons(fused)} == {"triton"}
    with torch.no_grad():
        torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)


def test_nir_format(tmp_path):
    run, model = _run_dir(tmp_path)
    out = tmp_path / "digits.nir"
    assert main([str(run), str(out), "--format", "nir", "--dt", "1e-3"]) == 0
    graph = nir.read(out)
    assert {"input", "output", "features.0.bn_lif.lif", "head.module.1"} <= set(graph.nodes)
    assert graph.nodes["input"].input_type["input"].tolist() == [1, 8, 8]
    meta = graph.metadata
    assert (meta["source"], float(meta["dt"]), int(meta["T"])) == ("asgl", 1e-3, 2)
    assert "one sample per call" in meta["usage"] and "reset" in meta["usage"]
    spec = json.loads(meta["input"])
    assert (spec["shape"], spec["mean"], spec["std"], spec["class_names"]) == (
        [1, 8, 8], [0.3054], [0.376], [str(d) for d in range(10)])
    assert sorted(tmp_path.iterdir()) == sorted([run, out])  # no temporary file left behind


def _refused(capsys, argv, match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err, err
    assert err.count("\n") == 1, err


def test_bad_inputs_write_nothing(tmp_path, capsys):
    run, model = _run_dir(tmp_path)
    out = tmp_path / "export"
    out.mkdir()
    _refused(capsys, [str(run), str(out)], "already exists")
    assert list(out.iterdir()) == []

    _refused(capsys, [str(tmp_path / "nowhere"), str(tmp_path / "a")], "no checkpoint")

    # A checkpoint of another model: the config says digits_cnn8, the weights are digits_cnn's.
    other = tmp_path / "other"
    other.mkdir()
    foreign, _ = _run_dir(other, name="digits_cnn8", state_from=asgl.create_model("digits_cnn", T=2))
    _refused(capsys, [str(foreign), str(tmp_path / "b")], "model.name=digits_cnn8")

    soft = tmp_path / "soft"
    soft.mkdir()
    soft_run, _ = _run_dir(soft, reset="soft")
    _refused(capsys, [str(soft_run), str(tmp_path / "c.nir"), "--format", "nir"], "reset='soft'")

    nan = tmp_path / "nan"
    nan.mkdir()
    bad = asgl.create_model("digits_cnn", T=2)
    with torch.no_grad():
        bad.head.module[1].bias[0] = float("inf")
    nan_run, _ = _run_dir(nan, state_from=bad)
    _refused(capsys, [str(nan_run), str(tmp_path / "d")], "non-finite")
    assert not any((tmp_path / n).exists() for n in "abcd") and not (tmp_path / "c.nir").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_save_pretrained_refuses_training_mode_and_load_checks_the_folder(tmp_path):
    model = asgl.create_model("digits_cnn", T=2)
    with pytest.raises(ValueError, match="training mode"):
        save_pretrained(model, tmp_path / "x", name="digits_cnn")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="does not fit"):
        save_pretrained(model.eval(), tmp_path / "x", name="digits_cnn8")
    with pytest.raises(FileNotFoundError, match="not a pretrained folder"):
        asgl.load_pretrained(tmp_path)
    folder = save_pretrained(model.eval(), tmp_path / "y", name="digits_cnn")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "T"}))
    with pytest.raises(ValueError, match="lacks T"):
        asgl.load_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        asgl.load_pretrained(folder)


DIGITS = {"kind": "image", "layout": "[B, C, H, W]", "shape": [1, 8, 8], "dtype": "uint8", "value_range": [0, 255],
          "mean": [0.3054], "std": [0.376], "class_names": None}


def test_preprocess_normalises_raw_images_as_the_trainer_and_refuses_the_rest():
    from asgl.train.data.images import IMAGE_SPECS, normaliser

    pre = asgl.Preprocess(DIGITS)
    x = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    expected = normaliser(IMAGE_SPECS["digits"], "cpu")(x)
    assert torch.equal(pre(x), expected)  # the trainer's arithmetic, bit for bit
    assert torch.equal(pre(x[0]), expected[:1])  # one sample
    torch.testing.assert_close(pre(x.float() / 255), expected, rtol=0, atol=1e-5)
    for bad, match in ((x.view(5, 8, 8, 1), r"shape \[B, 1, 8, 8\]"), (x.long(), "uint8 images"),
                       (expected, "normalised already")):
        with pytest.raises(ValueError, match=match):
            pre(bad)
    seq = asgl.Preprocess({"kind": "sequence", "layout": "[B, T, F]", "shape": [3, 700], "dtype": "float32",
                           "value_range": [0, None], "mean": None, "std": None, "class_names": None})
    counts = torch.randint(0, 3, (2, 3, 700))
    assert torch.equal(seq(counts), counts.float())
    with pytest.raises(ValueError, match="non-negative counts"):
        seq(-counts.float() - 1)
    for key, value, match in (("kind", "video", "input.kind"), ("std", [0.0], "input.std"),
                              ("layout", "[B, H, W, C]", "input.layout"), ("mean", [0.1, 0.2], "input.mean")):
        with pytest.raises(ValueError, match=match):
            asgl.Preprocess({**DIGITS, key: value})


def test_load_pretrained_refuses_a_bad_input_description(tmp_path):
    model = asgl.create_model("digits_cnn", T=2).eval()
    with pytest.raises(ValueError, match="3 input channels"):
        save_pretrained(model, tmp_path / "x", name="digits_cnn", input_spec={**DIGITS, "shape": [3, 8, 8],
                                                                             "mean": [0, 0, 0], "std": [1, 1, 1]})
    assert not (tmp_path / "x").exists()
    folder = save_pretrained(model, tmp_path / "y", name="digits_cnn", input_spec=DIGITS)
    assert asgl.load_pretrained(folder).preprocess.spec == DIGITS
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "input": {**DIGITS, "value_range": [0, 1]}}))
    with pytest.raises(ValueError, match="config.json: input.value_range"):
        asgl.load_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config, "input": None}))
    assert asgl.load_pretrained(folder).preprocess is None  # a folder written without one
