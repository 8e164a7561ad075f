"""The optional packages (the pip extras of ``asgl-snn``) and the one line that names a missing one.

``pip install asgl-snn`` brings what the neuron, the kernels and the networks need (torch, triton
where it installs, einops); ``import asgl``, ``asgl.create_model`` and ``asgl.LIF`` run with that
alone. Everything else imports its packages where it uses them, through :func:`need` (a function)
or :func:`command_imports` (a command's module-level imports), so that a missing package ends in
one line naming the extra that brings it, e.g.::

    error: python -m asgl.train.eval needs the `pyyaml` package: pip install 'asgl-snn[train]'
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from types import ModuleType

__all__ = ["PACKAGES", "MissingExtra", "command_imports", "hint", "need"]

# import name -> (distribution that provides it, the extra of pyproject.toml that installs it).
# tests/test_install.py checks every entry against pyproject.toml.
PACKAGES: dict[str, tuple[str, str]] = {
    "accelerate": ("accelerate", "train"),
    "datasets": ("datasets", "train"),
    "huggingface_hub": ("huggingface_hub", "train"),
    "rich": ("rich", "train"),
    "yaml": ("pyyaml", "train"),
    "numpy": ("numpy", "train"),
    "PIL": ("pillow", "train"),
    "pyarrow": ("pyarrow", "train"),  # through datasets
    "h5py": ("h5py", "data"),
    "sklearn": ("scikit-learn", "digits"),
    "matplotlib": ("matplotlib", "plot"),
    "nir": ("nir", "deploy"),
    "safetensors": ("safetensors", "deploy"),
    "nirtorch": ("nirtorch", "deploy"),
    "snntorch": ("snntorch", "deploy"),
}


class MissingExtra(ImportError):
    """An optional package is not installed; the message names the extra that brings it."""


def hint(module: str, what: str) -> str:
    """``"<what> needs the `<distribution>` package: pip install 'asgl-snn[<extra>]'"`` for the import
    name ``module`` (a key of :data:`PACKAGES`, or a submodule of one)."""
    dist, extra = PACKAGES[module.split(".")[0]]
    return f"{what} needs the `{dist}` package: pip install 'asgl-snn[{extra}]'"


def _missing(error: ModuleNotFoundError, wanted: str | None = None) -> str | None:
    """The import name of :data:`PACKAGES` that ``error`` is about (the one that failed, else
    ``wanted`` when a package it imports is absent), or None for a module of no extra."""
    top = (error.name or "").split(".")[0]
    if top in PACKAGES:
        return top
    return wanted.split(".")[0] if wanted is not None and wanted.split(".")[0] in PACKAGES else None


def need(module: str, what: str) -> ModuleType:
    """``importlib.import_module(module)``, or :class:`MissingExtra` whose message says what needs it
    and which extra to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        name = _missing(e, module)
        if name is None:
            raise
        raise MissingExtra(hint(name, what)) from None


@contextlib.contextmanager
def command_imports(module_name: str, command: str):
    """Around a command's module-level imports: a missing optional package ends the command with one
    ``error:`` line and exit code 2 when the module runs as the program (``module_name`` is its
    ``__name__``), or raises :class:`MissingExtra` with that line when it is imported."""
    try:
        yield
    except ModuleNotFoundError as e:
        name = _missing(e)
        if name is None:
            raise
        message = hint(name, command)
        if module_name == "__main__":
            print(f"error: {message}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        raise MissingExtra(message) from None
