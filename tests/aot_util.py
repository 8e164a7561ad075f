"""Ahead-of-time compiles for the kernel tests: the machinery lives in :mod:`perf.aot` (shared with
the static performance model, ``perf/static_model.py``); this module gives the tests its names."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from perf.aot import (  # noqa: E402,F401
    BINARY_L4, DTYPES, CompileResult, KernelSpec, all_specs, compile_kernels, compile_problems, config_specs,
    covering_specs, register_table, static_t_specs,
)
