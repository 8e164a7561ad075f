"""Ahead-of-time compiles for the kernel tests: the machinery lives in :mod:`perf.aot` (shared with
the static performance model, ``perf/static_model.py``); this module gives the tests its names."""

from __future__ import annotations

from perf.aot import (  # noqa: F401  (the names the tests import from here)
    BINARY_L4, DTYPES, CompileResult, KernelSpec, all_specs, compile_kernels, compile_problems, config_specs,
    covering_specs, register_table, static_t_specs,
)
