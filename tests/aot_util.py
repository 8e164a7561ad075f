"""Ahead-of-time compilation of Triton kernels for NVIDIA targets, without a GPU.

``triton.compile`` refuses to run in a process where ``TRITON_INTERPRET=1`` is set (as the test
suite sets it on CPU-only machines), so :func:`compile_kernels` runs a batch of compiles in one
fresh subprocess with that variable removed, and returns, per spec, the PTX and what ``ptxas -v``
says about it (registers, spill bytes, local memory). Reusable by any kernel test:

    spec = KernelSpec("asgl.kernels.lif:_lif_fwd_kernel", signature={...}, constexprs={...},
                      divisible=("x_ptr", "N"), arch=90, num_warps=4)
    [result] = compile_kernels([spec])
    result.ptx, result.registers, result.spill_bytes, result.vector_widths("ld.global")

``signature`` maps every argument name to its Triton type string (``"*bf16"``, ``"i32"``,
``"fp32"``; constexprs as ``"constexpr"``), the spelling of ``triton.compiler.ASTSource`` since
triton 3.2 (names as keys, constexpr values in a separate dict). ``divisible`` lists the arguments
the JIT would specialise as multiples of 16 (16-byte-aligned pointers, sizes divisible by 16).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    kernel: str  # "module:attribute" of the @triton.jit function
    signature: dict
    constexprs: dict
    divisible: tuple = ()
    arch: int = 90
    num_warps: int = 4
    label: str = ""


@dataclasses.dataclass
class CompileResult:
    spec: KernelSpec
    ptx: str = ""
    registers: int = -1
    spill_bytes: int = -1  # spill stores + spill loads reported by ptxas
    local_bytes: int = -1  # stack frame bytes reported by ptxas
    error: str = ""

    def vector_widths(self, op: str) -> set[int]:
        """Vector widths of ``op`` (e.g. ``"ld.global"``, ``"st.global"``) in the PTX: 1 = scalar."""
        widths = set()
        for m in re.finditer(rf"\b{re.escape(op)}(?:\.[a-z0-9_]+)*", self.ptx):
            v = re.search(r"\.v(\d)", m.group(0))
            widths.add(int(v.group(1)) if v else 1)
        return widths

    @property
    def uses_local_memory(self) -> bool:
        return bool(re.search(r"\b(ld|st)\.local\b", self.ptx))


def _ptxas_path(arch: int) -> str:
    """The ptxas that triton itself uses for ``arch`` (newer tritons pick one per arch)."""
    import triton

    try:
        from triton.backends.nvidia.compiler import get_ptxas

        return get_ptxas(arch).path
    except (ImportError, TypeError):
        return triton.knobs.nvidia.ptxas.path


def _compile_one(spec: dict) -> dict:
    """Runs in the subprocess (no TRITON_INTERPRET)."""
    import importlib
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module, attr = spec["kernel"].split(":")
    fn = getattr(importlib.import_module(module), attr)
    names = list(spec["signature"])
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in spec["divisible"]}
    src = ASTSource(fn=fn, signature=spec["signature"], constexprs=spec["constexprs"], attrs=attrs)
    out = {"ptx": "", "registers": -1, "spill_bytes": -1, "local_bytes": -1, "error": ""}
    try:
        compiled = triton.compile(src, target=GPUTarget("cuda", spec["arch"], 32),
                                  options={"num_warps": spec["num_warps"]})
    except Exception as e:  # reported back as the spec's error
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    ptx = compiled.asm["ptx"]
    out["ptx"] = ptx
    ptxas = _ptxas_path(spec["arch"])
    target = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "k.ptx"
        path.write_text(ptx)
        res = subprocess.run([ptxas, "-v", f"--gpu-name={target}", str(path), "-o", str(Path(d) / "k.o")],
                             capture_output=True, text=True)
    log = res.stdout + res.stderr
    if res.returncode != 0:
        out["error"] = "ptxas: " + log
        return out
    m = re.search(r"Used (\d+) registers", log)
    out["registers"] = int(m.group(1)) if m else -1
    stores = re.search(r"(\d+) bytes spill stores", log)
    loads = re.search(r"(\d+) bytes spill loads", log)
    out["spill_bytes"] = (int(stores.group(1)) if stores else 0) + (int(loads.group(1)) if loads else 0)
    frame = re.search(r"(\d+) bytes stack frame", log)
    out["local_bytes"] = int(frame.group(1)) if frame else 0
    return out


def compile_kernels(specs: list[KernelSpec], timeout: float = 900.0) -> list[CompileResult]:
    """Compile every spec in one subprocess without ``TRITON_INTERPRET``; results in spec order."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    payload = json.dumps([dataclasses.asdict(s) for s in specs])
    res = subprocess.run([sys.executable, str(Path(__file__).resolve())], input=payload, env=env,
                         capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))
    if res.returncode != 0:
        raise RuntimeError(f"AOT compile subprocess failed:\n{res.stderr[-4000:]}")
    outs = json.loads(res.stdout.splitlines()[-1])
    return [CompileResult(spec=s, **o) for s, o in zip(specs, outs)]


if __name__ == "__main__":
    specs = json.loads(sys.stdin.read())
    results = [_compile_one(s) for s in specs]
    sys.stdout.write("\n" + json.dumps(results) + "\n")


# ---------------------------------------------------------------------------------------------
# Which specialisations to compile, and the checks every kernel must pass
# ---------------------------------------------------------------------------------------------

DTYPES = ("fp32", "fp16", "bf16")
BINARY_L4 = ((0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0))  # strength-2 covering of 3 binary flags


def covering_specs(fwd_spec, bwd_spec) -> list[KernelSpec]:
    """Every dtype × NOISE value, the three binary flags rotated through an L4 covering array, plus
    eval (no u) and the test-only mask output; both archs. ``fwd_spec``/``bwd_spec`` build one
    :class:`KernelSpec` from ``(dtype, arch, NOISE=, SIGMOID=, HARD_RESET=, CHANNEL_WIDTH=[, STORE_U=,
    STORE_MASK=])``."""
    specs = []
    for arch in (80, 90):
        for i, dtype in enumerate(DTYPES):
            for noise in (0, 1, 2):
                sig, hard, chan = BINARY_L4[(noise + i) % 4]
                flags = dict(NOISE=noise, SIGMOID=sig, HARD_RESET=hard, CHANNEL_WIDTH=chan)
                specs.append(fwd_spec(dtype, arch, **flags, STORE_U=True))
                specs.append(bwd_spec(dtype, arch, **flags))
            specs.append(fwd_spec(dtype, arch, NOISE=0, SIGMOID=i % 2, HARD_RESET=1, CHANNEL_WIDTH=i % 2,
                                  STORE_U=False))
            specs.append(fwd_spec(dtype, arch, NOISE=2, SIGMOID=1, HARD_RESET=i % 2, CHANNEL_WIDTH=0, STORE_U=True,
                                  STORE_MASK=True))
    return specs


def all_specs(fwd_spec, bwd_spec) -> list[KernelSpec]:
    """Every specialisation a fused neuron launches (the mask output only with default flags)."""
    specs = []
    for arch, dtype, noise, sig, hard, chan in itertools.product((80, 90), DTYPES, (0, 1, 2), (0, 1), (0, 1), (0, 1)):
        flags = dict(NOISE=noise, SIGMOID=sig, HARD_RESET=hard, CHANNEL_WIDTH=chan)
        specs += [fwd_spec(dtype, arch, **flags, STORE_U=s) for s in (True, False)]
        specs.append(bwd_spec(dtype, arch, **flags))
    for arch, dtype, noise in itertools.product((80, 90), DTYPES, (0, 1, 2)):
        specs.append(fwd_spec(dtype, arch, NOISE=noise, SIGMOID=1, HARD_RESET=1, CHANNEL_WIDTH=0, STORE_U=True,
                              STORE_MASK=True))
    return specs


def compile_problems(result: CompileResult) -> list[str]:
    """A failed compile, or any spill / stack frame / local-memory access."""
    s = result.spec
    if result.error:
        return [f"{s.label}: {result.error[:500]}"]
    if result.spill_bytes != 0 or result.local_bytes != 0 or result.uses_local_memory:
        return [f"{s.label}: {result.registers} registers, spills {result.spill_bytes} B, stack {result.local_bytes} B"]
    return []


def register_table(results: list[CompileResult]) -> None:
    """Print the register range per kernel, arch and dtype (visible with ``pytest -s``)."""
    regs = {}
    for r in results:
        regs.setdefault(" ".join(r.spec.label.split(" ")[:3]), []).append(r.registers)
    for k, v in sorted(regs.items()):
        print(f"{k}: registers {min(v)}..{max(v)} over {len(v)} specialisations")
