"""What a raw sample becomes before a trained network sees it: the input description a pretrained
folder (``config.json``'s ``"input"``) and a NIR graph (its metadata) carry, and :class:`Preprocess`,
which applies it.

The description (a JSON object; :func:`check_input_spec` validates one)::

    kind         "image" | "event" | "sequence"
    layout       what the network takes: "[B, C, H, W]" (images), "[B, T, C, H, W]" (event
                 frames), "[B, T, F]" (sequences)
    shape        one sample, batch dim excluded: [C, H, W], [T, C, H, W] or [T, F]
    dtype        the raw samples' dtype: "uint8" for images, "float32" (counts) otherwise
    value_range  [low, high] of the raw samples (high null: counts without a bound)
    mean, std    images: per channel, of x/255; the network takes (x/255 − mean)/std. null otherwise
    class_names  one name per class, or null where the data set has none to hand
    encoding     how raw recordings became the samples (events, sequences); for the reader

An image network repeats its input over its T steps; event and sequence networks take step t of
the sample at step t.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["KINDS", "LAYOUTS", "Preprocess", "check_input_spec", "image_constants", "image_normaliser"]

KINDS = ("image", "event", "sequence")
LAYOUTS = {"image": "[B, C, H, W]", "event": "[B, T, C, H, W]", "sequence": "[B, T, F]"}
_RANKS = {"image": 3, "event": 4, "sequence": 2}


def image_constants(mean, std, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(255·mean, 1/(255·std))`` as float32 ``[1, C, 1, 1]``: the constants of :func:`image_normaliser`."""
    mean255 = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255.0
    inv_std255 = 1.0 / (torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255.0)
    return mean255, inv_std255


def image_normaliser(mean, std, device: torch.device | str | None = None):
    """``x [B, C, H, W]`` (uint8, or float on the 0..255 scale) → float32 ``(x/255 − mean)/std``, computed
    as ``(x − 255·mean) · 1/(255·std)``: the trainer's normalisation (``asgl.train.data.images``) and
    :class:`Preprocess`'s, so an exported network scores raw test images exactly as the trainer did."""
    mean255, inv_std255 = image_constants(mean, std, device)
    return lambda x: (x.float() - mean255) * inv_std255


def _numbers(value, n: int | None, what: str, *, positive: bool = False) -> list[float]:
    ok = (isinstance(value, (list, tuple)) and len(value) > 0 and (n is None or len(value) == n)
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  and (v > 0 or not positive) for v in value))
    if not ok:
        raise ValueError(f"input.{what} must be a list of {n or 'some'} finite numbers"
                         f"{' > 0' if positive else ''}, got {value!r}")
    return [float(v) for v in value]


def check_input_spec(spec: Any) -> dict:
    """``spec`` as a plain dict after checking every field (``ValueError`` naming the first bad one)."""
    if not isinstance(spec, dict):
        raise ValueError(f"input must be a JSON object, got {type(spec).__name__}")
    missing = [k for k in ("kind", "layout", "shape", "dtype", "value_range", "mean", "std", "class_names")
               if k not in spec]
    if missing:
        raise ValueError(f"input lacks {', '.join(missing)}")
    kind = spec["kind"]
    if kind not in KINDS:
        raise ValueError(f"input.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if spec["layout"] != LAYOUTS[kind]:
        raise ValueError(f"input.layout of {kind} data is {LAYOUTS[kind]!r}, got {spec['layout']!r}")
    shape = spec["shape"]
    if not (isinstance(shape, (list, tuple)) and len(shape) == _RANKS[kind]
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise ValueError(f"input.shape of {kind} data is {_RANKS[kind]} positive ints "
                         f"({LAYOUTS[kind].replace('B, ', '')}), got {shape!r}")
    if spec["dtype"] != ("uint8" if kind == "image" else "float32"):
        raise ValueError(f"input.dtype of {kind} data is {'uint8' if kind == 'image' else 'float32'}, "
                         f"got {spec['dtype']!r}")
    if kind == "image" and spec["value_range"] != [0, 255] or kind != "image" and spec["value_range"] != [0, None]:
        raise ValueError(f"input.value_range of {kind} data is {[0, 255] if kind == 'image' else [0, None]}, "
                         f"got {spec['value_range']!r}")
    out = dict(spec, shape=list(shape))
    if kind == "image":
        out["mean"] = _numbers(spec["mean"], shape[0], "mean")
        out["std"] = _numbers(spec["std"], shape[0], "std", positive=True)
    elif spec["mean"] is not None or spec["std"] is not None:
        raise ValueError(f"input.mean and input.std are null for {kind} data (it is not normalised)")
    names = spec["class_names"]
    if names is not None and not (isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)):
        raise ValueError(f"input.class_names must be null or a list of strings, got {names!r}")
    return out


class Preprocess(nn.Module):
    """Raw samples → the network's input: ``model(model.preprocess(x))``.

    ``asgl.load_pretrained`` sets it as ``model.preprocess`` from the folder's input description
    (:data:`spec`, see the module docstring); its buffers follow the model's ``.to(device)`` and
    stay out of the state dict.

    - images: ``uint8 [B, C, H, W]`` (or one ``[C, H, W]``) with values 0..255, or floats in
      ``[0, 1]`` (the same image divided by 255) → float32 ``(x/255 − mean)/std``. Floats outside
      ``[0, 1]`` are refused: they are most likely normalised already (pass those to the model).
    - events, sequences: non-negative counts ``[B, *shape]`` (or one sample) → float32, unchanged.

    Anything of another shape, dtype or range raises ``ValueError`` saying what was expected.
    """

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = check_input_spec(spec)
        if self.spec["kind"] == "image":
            mean255, inv_std255 = image_constants(self.spec["mean"], self.spec["std"])
            self.register_buffer("mean255", mean255, persistent=False)
            self.register_buffer("inv_std255", inv_std255, persistent=False)

    def extra_repr(self) -> str:
        s = self.spec
        norm = f", mean={s['mean']}, std={s['std']}" if s["kind"] == "image" else ""
        return f"kind={s['kind']}, layout={s['layout']}, shape={s['shape']}, dtype={s['dtype']}{norm}"

    def forward(self, x) -> torch.Tensor:
        s, shape = self.spec, tuple(self.spec["shape"])
        x = torch.as_tensor(x)
        if tuple(x.shape) == shape:
            x = x.unsqueeze(0)
        if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            raise ValueError(f"expected {s['kind']} samples of shape [B, {', '.join(map(str, shape))}] (layout "
                             f"{s['layout']}) or one of shape {list(shape)}, got {list(x.shape)}")
        if s["kind"] != "image":
            if x.dtype == torch.bool or x.is_complex():
                raise ValueError(f"expected counts (float or int) for {s['kind']} data, got {x.dtype}")
            x = x.float()
            if x.numel() and float(x.min()) < 0:
                raise ValueError(f"expected non-negative counts for {s['kind']} data, got a minimum of "
                                 f"{float(x.min()):.3g}")
            return x
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise ValueError(f"expected uint8 images (0..255) or floats in [0, 1], got {x.dtype}")
        x = x.to(self.mean255.device)
        if x.is_floating_point():
            low, high = (float(x.min()), float(x.max())) if x.numel() else (0.0, 1.0)
            if low < 0 or high > 1:
                raise ValueError(f"expected uint8 images (0..255) or floats in [0, 1], got floats in [{low:.3g}, "
                                 f"{high:.3g}] (normalised already? then give them to the model directly)")
            x = x.float() * 255.0
        return (x.float() - self.mean255) * self.inv_std255
