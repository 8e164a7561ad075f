"""The README's commands on a quickstart run, taken from the README itself and run as written, so
that the documented path is the tested one: the evaluation (operations and energy included), and
the "Export and deploy" section: its shell commands (the export to a folder and to NIR) and its two
Python blocks (raw uint8 test digits through ``asgl.load_pretrained`` and ``model.preprocess``, then
the NIR graph through snnTorch)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Export and deploy"
EVALUATE = "**Evaluate**"

pytest.importorskip("datasets", reason="reading the digits parquet files needs the datasets package")
pytest.importorskip("snntorch")
pytest.importorskip("safetensors")


def readme_blocks(marker: str) -> list[tuple[str, str]]:
    """``[(language, code)]`` of the fenced blocks of the README from ``marker`` (a section heading or
    a paragraph's bold lead) to the next heading or bold lead."""
    text = (REPO / "README.md").read_text()
    start = text.index(marker) + len(marker)
    ends = [i for i in (text.find("\n## ", start), text.find("\n**", start)) if i >= 0]
    return re.findall(r"```(\w+)\n(.*?)```", text[start:min(ends) if ends else None], flags=re.S)


def shell_commands(code: str) -> list[list[str]]:
    """The ``python ...`` command lines of a bash block (comments dropped), ``python`` being this one."""
    commands = []
    for line in code.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "python":
            commands.append([sys.executable, *words[1:]])
    return commands


def env() -> dict[str, str]:
    e = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
    e.pop("TRITON_INTERPRET", None)  # the trainer and the export run the CPU reference neurons, as a user's would
    return e


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A working directory as the README's is after ``make quickstart`` (3 epochs instead of 10 to
    keep the test short): ``data/`` (the bundled digits) and ``runs/quickstart``."""
    work = tmp_path_factory.mktemp("readme")
    (work / "data").symlink_to(REPO / "data", target_is_directory=True)
    r = subprocess.run(["nice", sys.executable, str(REPO / "train" / "run.py"), "--config",
                        str(REPO / "configs" / "quickstart.yaml"), "--optim.epochs=3",
                        f"--data.cache_dir={work / 'cache'}"], cwd=work, env=env(), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert (work / "runs" / "quickstart" / "best.pt").is_file()
    return work


@pytest.fixture(scope="module")
def deployed(workdir) -> dict:
    """The section's commands and Python blocks run in ``workdir``; the Python blocks' namespace."""
    blocks = readme_blocks(SECTION)
    commands = [c for lang, code in blocks if lang == "bash" for c in shell_commands(code)]
    assert len(commands) == 2, commands
    for command in commands:
        r = subprocess.run(command, cwd=workdir, env=env(), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (command, r.stderr)
        assert r.stdout.startswith("exported runs/quickstart -> runs/quickstart"), r.stdout
    python = [code for lang, code in blocks if lang == "python"]
    assert len(python) == 2
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            for code in python:
                exec(compile(code, f"README.md ({SECTION})", "exec"), namespace)
    finally:
        os.chdir(cwd)
    namespace["stdout"] = out.getvalue()
    return namespace


def best_test_acc(workdir: Path) -> float:
    rows = [json.loads(line) for line in (workdir / "runs" / "quickstart" / "metrics.jsonl").read_text().splitlines()]
    return max(row["test_acc"] for row in rows)


def test_export_writes_under_runs_with_the_input_description(workdir, deployed):
    config = json.loads((workdir / "runs" / "quickstart-export" / "config.json").read_text())
    assert config["T"] == 4 and config["model"] == "digits_cnn"
    assert config["input"] == {"kind": "image", "layout": "[B, C, H, W]", "shape": [1, 8, 8], "dtype": "uint8",
                               "value_range": [0, 255], "mean": [0.3054], "std": [0.376],
                               "class_names": [str(d) for d in range(10)]}
    assert (workdir / "runs" / "quickstart.nir").is_file()
    assert sorted(p.name for p in workdir.iterdir()) == ["cache", "data", "runs"]  # nothing else written


def test_load_pretrained_scores_the_trained_accuracy_on_raw_uint8_digits(workdir, deployed):
    """The README's block: raw uint8 images through model.preprocess score exactly what the trainer
    logged for best.pt (the same normalisation arithmetic, the same network); [0, 1] floats too."""
    import torch

    images, labels, logits = deployed["images"], deployed["labels"], deployed["logits"]
    assert images.dtype == torch.uint8 and tuple(images.shape) == (360, 1, 8, 8)
    trained = best_test_acc(workdir)
    assert trained > 90  # the run learned: chance is 10 %
    correct = int((logits.argmax(-1) == labels).sum())
    assert 100.0 * correct / 360 == trained
    assert f"asgl: {correct / 360:.2%}" in deployed["stdout"]
    model = deployed["model"]
    with torch.no_grad():
        floats = model(model.preprocess(images.float() / 255)).mean(0)
    assert 100.0 * int((floats.argmax(-1) == labels).sum()) / 360 == trained
    with pytest.raises(ValueError, match="normalised already"):
        model.preprocess(model.preprocess(images))


def test_snntorch_runs_the_nir_graph_as_the_readme_shows(workdir, deployed):
    """The README's snnTorch block (float32, one sample at a time, reset between samples) predicts the
    class asgl predicts for every test digit."""
    import torch

    predictions, logits = deployed["predictions"], deployed["logits"]
    assert predictions.shape == (360,)
    assert torch.equal(predictions, logits.argmax(-1))
    assert "the same class as asgl for 100.00%" in deployed["stdout"]


def test_eval_as_the_readme_shows(workdir):
    """The README's evaluation command: the trainer's numbers for best.pt, and the operation count.
    Its per-layer firing rates are those of the trainer's own counter; the ANN MACs of digits_cnn
    by hand: conv 1->32 at 8x8: 32·64·9 = 18,432; 32->64 at 8x8: 64·64·32·9 = 1,179,648; after the
    pool 64->64 at 4x4: 64·16·64·9 = 589,824; the classifier 256·10 = 2,560."""
    ((lang, code),) = readme_blocks(EVALUATE)
    (command,) = shell_commands(code)
    r = subprocess.run(command, cwd=workdir, env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads((workdir / "runs" / "quickstart" / "eval_best.json").read_text())
    (line,) = r.stdout.splitlines()
    assert line.startswith(f"eval runs/quickstart/best.pt | top1 {best_test_acc(workdir):.2f} | ")
    assert report["top1"] == best_test_acc(workdir)
    assert "| per sample: SOPs " in line and "(assumed 0.9 pJ/AC, 4.6 pJ/MAC)" in line
    ops = report["operations"]
    assert ops["assumptions"]["pj_per_ac"] == 0.9 and ops["assumptions"]["pj_per_mac"] == 4.6
    layers = ops["layers"]
    assert list(layers) == ["features.0.conv", "features.1.conv", "features.3.conv", "head.module.1"]
    assert [row["ann_macs"] for row in layers.values()] == [18432, 1179648, 589824, 2560]
    assert layers["features.0.conv"]["macs"] == 4 * 18432 and layers["features.0.conv"]["sops"] == 0
    for row in list(layers.values())[1:]:
        assert row["firing_rate"] == report["firing_rate"][row["input"]] and row["sops"] > 0 and row["macs"] == 0
        assert row["energy_pj"] == pytest.approx(0.9 * row["sops"])
    total = ops["total"]
    for key in ("sops", "macs", "ann_macs", "energy_pj", "ann_energy_pj"):
        assert total[key] == pytest.approx(sum(row[key] for row in layers.values())), key
    assert total["ann_energy_pj"] == pytest.approx(4.6 * 1790464)

    out = workdir / "runs" / "cheap_adds.json"
    r = subprocess.run([*command, "--pj-per-ac=0.45", f"--out={out}"], cwd=workdir, env=env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    cheap = json.loads(out.read_text())["operations"]["total"]
    assert cheap["sops"] == total["sops"]
    assert cheap["energy_pj"] == pytest.approx(0.45 * total["sops"] + 4.6 * total["macs"])
    r = subprocess.run([*command, "--pj-per-mac=-1"], cwd=workdir, env=env(), capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: --pj-per-mac") and "Traceback" not in r.stderr
