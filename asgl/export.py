"""Trained networks as a folder of weights and config: :func:`save_pretrained`, :func:`load_pretrained`.

A pretrained folder holds

    config.json          {"format": "asgl-pretrained-v1", "model": name, "num_classes", "T",
                          "in_channels", "neuron": {the LIF arguments}, "input": {...} or null}:
                          create_model's arguments, and what the network's input is (below)
    model.safetensors    the model's state_dict (weights, BN running statistics, neuron decays,
                         widths, thresholds), readable without running pickled code

``"input"`` is the data set's input description (:mod:`asgl.preprocess`): layout and shape of one
sample, raw dtype and value range, the normalisation mean/std, class names. ``load_pretrained``
turns it into ``model.preprocess``, an :class:`asgl.preprocess.Preprocess` (a module whose buffers
follow ``model.to``; not in the state dict), so that raw samples score what the trainer measured::

    model = asgl.load_pretrained("runs/digits")
    logits = model(model.preprocess(images_uint8))      # per-step logits [T, B, K]; predict their mean

(A separate ``preprocess`` rather than normalising inside ``forward``: the network keeps taking
what it was trained on, so a caller that normalises already, ``asgl.to_nir`` and the state dict
see the same model as before, and ``preprocess`` can refuse input that is plainly normalised
already instead of normalising it twice.)

``python -m asgl.train.export RUN_DIR OUT_DIR`` writes one from a training run. ``load_pretrained(OUT_DIR)``
rebuilds the network in evaluation mode on any backend (the torch reference or the Triton kernels).
``safetensors`` is imported on first use (``pip install 'asgl-snn[deploy]'``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from .extras import need
from .models import create_model
from .models.registry import SpikingNet
from .preprocess import Preprocess, check_input_spec

__all__ = ["CONFIG_NAME", "FORMAT", "WEIGHTS_NAME", "check_exportable", "check_state_fits", "load_pretrained",
           "save_pretrained"]

FORMAT = "asgl-pretrained-v1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def _safetensors():
    return need("safetensors.torch", "pretrained folders (asgl.load_pretrained, save_pretrained)")


def check_exportable(model: nn.Module) -> None:
    """A model to export must be in eval mode and hold only finite parameters and buffers."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        raise ValueError(f"model is in training mode ({training[0]!r}): call model.eval() first; an export is "
                         "the evaluation network (pure spikes, batch norm from running statistics)")
    for kind, items in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in items:
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise ValueError(f"{kind} {name!r} holds non-finite values (NaN or inf): nothing to export")


def write_folder(out_dir: str | Path, write) -> Path:
    """Create ``out_dir`` holding what ``write(tmp_dir)`` puts in a temporary folder next to it, by one
    rename: on any error nothing is left. Refuses an ``out_dir`` that exists."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"export folder {out_dir} already exists; choose another or remove it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        write(tmp)
        mask = _umask()  # as open() and mkdir() would create them (mkdtemp and safetensors make them private)
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~mask)
        os.chmod(tmp, 0o777 & ~mask)
        os.rename(tmp, out_dir)  # fails, leaving nothing, if out_dir appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_pretrained(model: nn.Module, out_dir: str | Path, *, name: str, input_spec: dict | None = None) -> Path:
    """Write ``model`` (an :class:`asgl.models.SpikingNet` built by ``create_model(name, ...)``, in
    eval mode) to the new folder ``out_dir``: ``config.json`` and ``model.safetensors``.

    ``input_spec``: the input description (:mod:`asgl.preprocess`) that ``load_pretrained`` turns
    into ``model.preprocess``; None (``"input": null``) leaves the loaded model without one.
    """
    st = _safetensors()
    if not isinstance(model, SpikingNet):
        raise TypeError(f"model must be a network from asgl.create_model, got {type(model).__name__}")
    check_exportable(model)
    if input_spec is not None:
        input_spec = check_input_spec(input_spec)
        channels = input_spec["shape"][0 if input_spec["kind"] == "image" else 1]
        if channels != model.in_channels:
            raise ValueError(f"input_spec describes {channels} input channels (shape {input_spec['shape']}), the "
                             f"model takes {model.in_channels}")
    config = {"format": FORMAT, "model": name, "num_classes": model.num_classes, "T": model.T,
              "in_channels": model.in_channels, "neuron": dict(model.neuron_kwargs), "input": input_spec}
    try:  # the config must rebuild this very model
        rebuilt = create_model(name, num_classes=model.num_classes, T=model.T, in_channels=model.in_channels,
                               **model.neuron_kwargs)
    except ValueError as e:
        raise ValueError(f"name={name!r} does not rebuild this model: {e}") from None
    check_state_fits(rebuilt, model.state_dict(), f"the model given (name={name!r})")
    # Own, contiguous CPU copies: safetensors refuses views and tensors that share memory.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}

    def write(tmp: Path) -> None:
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        st.save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": FORMAT})

    return write_folder(out_dir, write)


def check_state_fits(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Raise ``ValueError`` naming the keys and shapes when ``state`` is not ``model``'s state dict."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{label} {items[:5]}{' …' if len(items) > 5 else ''}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)) if items]
        raise ValueError(f"{what} does not fit {type(model).__name__}: " + "; ".join(parts))


def load_pretrained(path: str | Path, *, backend: str = "auto", device: str | torch.device = "cpu") -> nn.Module:
    """The network saved in the folder ``path``, in eval mode on ``device``, with ``model.preprocess``.

    ``backend``: the neurons' backend (``"auto"``, ``"torch"`` or ``"triton"``), whatever the model
    was trained with. ``model.preprocess`` (:class:`asgl.preprocess.Preprocess`) maps raw samples
    (uint8 images, or floats in ``[0, 1]``; counts for event and sequence data) to what the network
    takes: ``model(model.preprocess(x))``. It is None for a folder written without an input
    description.
    """
    st = _safetensors()
    path = Path(path)
    config_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"{path} is not a pretrained folder: it needs {CONFIG_NAME} and {WEIGHTS_NAME} "
                                "(written by `python -m asgl.train.export RUN_DIR OUT_DIR`)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path} is not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{config_path} is not an {FORMAT} config")
    missing = [k for k in ("model", "num_classes", "T", "in_channels", "neuron") if k not in config]
    if missing:
        raise ValueError(f"{config_path} lacks {', '.join(missing)}")
    try:
        preprocess = Preprocess(config["input"]) if config.get("input") is not None else None
    except ValueError as e:
        raise ValueError(f"{config_path}: {e}") from None
    neuron = dict(config["neuron"], backend=backend)
    model = create_model(config["model"], num_classes=config["num_classes"], T=config["T"],
                         in_channels=config["in_channels"], **neuron)
    try:
        state = st.load_file(str(weights_path))
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"{weights_path} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    check_state_fits(model, state, str(weights_path))
    model.load_state_dict(state)
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ValueError(f"{weights_path}: {k!r} holds non-finite values")
    model.preprocess = preprocess
    return model.to(device).eval()
