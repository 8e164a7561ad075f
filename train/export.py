"""Export a trained network from a run folder.

    python -m asgl.train.export RUN_DIR OUT_DIR                  # OUT_DIR/config.json + model.safetensors
    python -m asgl.train.export RUN_DIR OUT.nir --format nir     # the NIR graph (asgl.to_nir)
    python -m asgl.train.export RUN_DIR/last.pt OUT_DIR          # a given checkpoint (default: RUN_DIR/best.pt)

The safetensors folder loads back with ``asgl.load_pretrained(OUT_DIR)`` on any backend. The NIR
file is the evaluation network per time step and per sample (see ``asgl/nir.py``); ``--dt`` sets
the time step that turns decays into NIR time constants. Both carry the data set's input
description (``asgl.preprocess``: layout, shape, value range, normalisation, class names): in
``config.json``'s ``"input"`` (``model.preprocess`` of the loaded model applies it) and as JSON in
the NIR graph's ``metadata["input"]``.

The model is rebuilt from the checkpoint's own config (``build_model`` of ``train/run.py``), with
the number of classes and input channels of its data set, and its state loaded strictly. Exit codes:
0 written; 2 anything refused (a missing or foreign checkpoint, an existing output, a model NIR
cannot express), with one ``error:`` line and nothing written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # a file run from a clone: the repository root, not this folder (README, "From a clone")
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from asgl.extras import command_imports, need

with command_imports(__name__, "python -m asgl.train.export"):
    import torch

    from asgl.train import checkpoint as ckpt_io
    from asgl.train import run_folder
    from asgl.train.config import ConfigError, build_config, flatten

EXIT_OK, EXIT_USAGE = 0, 2
FORMATS = ("safetensors", "nir")


def load_model(source: Path) -> tuple[torch.nn.Module, object, Path]:
    """The network of a run folder (its ``best.pt``) or of a checkpoint file, in eval mode, on the CPU."""
    from asgl.export import check_state_fits
    from asgl.train.data import describe_input
    from asgl.train.run import build_model

    path = source / "best.pt" if source.is_dir() else source
    if source.is_dir() and not path.is_file() and (source / "last.pt").is_file():
        path = source / "last.pt"
    ckpt = ckpt_io.load(path)
    cfg = build_config(None, {}, base=flatten(ckpt["config"]))
    if cfg.data.frames is None:
        cfg.data.frames = cfg.model.T
    num_classes, in_channels, _ = describe_input(cfg.data, cfg.model.T)
    model = build_model(cfg, num_classes, in_channels)
    try:
        check_state_fits(model, ckpt["model"], f"checkpoint {path}")
    except ValueError as e:
        raise ckpt_io.CheckpointError(f"{e} (the checkpoint of another model? its config says "
                                      f"model.name={cfg.model.name})") from None
    ckpt_io.load_model_state(model, ckpt["model"])
    return model.eval(), cfg, path


def export(source: str | Path, out: str | Path, *, format: str = "safetensors", dt: float | None = None) -> Path:
    """Write the network of ``source`` (run folder or checkpoint) to ``out``; returns ``out``."""
    import asgl
    from asgl.export import save_pretrained
    from asgl.train.data import describe_input

    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    out = Path(out)
    if out.exists():  # checked before the (slow) load as well as when writing
        raise FileExistsError(f"export target {out} already exists; choose another or remove it")
    writer = need("safetensors" if format == "safetensors" else "nir", f"python -m asgl.train.export --format {format}")
    model, cfg, _ = load_model(Path(source))
    _, _, input_spec = describe_input(cfg.data, cfg.model.T)
    if format == "safetensors":
        return save_pretrained(model, out, name=cfg.model.name, input_spec=input_spec)
    graph = asgl.to_nir(model, torch.zeros(2, *input_spec["shape"]), input_spec=input_spec,
                        **({} if dt is None else {"dt": dt}))
    # A temporary file next to it and one rename: a failed write leaves nothing.
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        writer.write(str(tmp), graph)
        os.rename(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asgl.train.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="run folder (its best.pt, else last.pt) or a checkpoint file")
    parser.add_argument("out", help="folder to create (safetensors) or .nir file to write (nir)")
    parser.add_argument("--format", choices=FORMATS, default="safetensors")
    parser.add_argument("--dt", type=float, default=None, help="NIR time step in seconds (default 1e-4)")
    args = parser.parse_args(argv)
    try:
        out = export(args.source, args.out, format=args.format, dt=args.dt)
    except (ckpt_io.CheckpointError, ConfigError, FileExistsError, ValueError, TypeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    run_folder.record(out)  # written into a run folder: train.overwrite=true clears it with the run
    print(f"exported {args.source} -> {out} ({args.format})", flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
