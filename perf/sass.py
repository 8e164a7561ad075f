"""Reading NVIDIA SASS (``nvdisasm -c`` text): basic blocks, loops, opcode pipes, and the path a warp runs.

:func:`parse_sass` and :func:`natural_loops` give the control-flow graph the steady-state count of
``perf/static_model.py`` walks. :func:`run` gives the *dynamic* path for one launch: it executes the
kernel's SASS for one thread of one program with the launch's arguments in the constant bank, so
every branch whose condition is a function of the arguments, the program id and the loop counters
(the ``t0 + j < T`` guards of an unrolled time loop, the loop's back edge, a ``T <= 8`` fast path)
is decided exactly, and the instructions it returns are those the warp issues at that T and N::

    trace = run(sass, perf.launches.kernel_params(launch))   # launch: a recorded KernelLaunch
    trace.issued, trace.pipes(), trace.round_trips, trace.global_bytes(threads)

Why an interpreter rather than a per-step attribution of blocks from the SASS layout, or compiling
with T known: a compile with T as a constant is another kernel (its loop unrolled, its guards folded
away) and counts what no launch runs; an attribution by layout assumes one shape of guard (the
compiler hoists, merges and re-orders them: in the noisy kernels the eight guards are evaluated as
uniform predicates ahead of the step they guard) and breaks when a kernel grows a second path (a
fully unrolled T <= 8 version beside the loop). Evaluating the integer and predicate instructions
that feed the branches needs no assumption on the layout; everything else (floating point, loads)
is simply unknown to it, and a branch that depends on an unknown value is either a data-dependent
slow path (taken as not taken and listed in ``trace.assumed``: the per-element kernels have none,
which the tests assert) or, backwards, an error. Thread-dependent branches (on ``threadIdx``) are
taken as the warp takes them when any lane does: the fall-through region is counted.

Pipes: the SASS opcode of each instruction decides its pipe (:data:`PIPE_OF`, rates in
``perf/devices.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import struct

M32 = 0xFFFFFFFF
M64 = (1 << 64) - 1

_INSTR = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s+(.*?)\s*;")
_LABEL = re.compile(r"^([.$\w]+):\s*$")
_BRANCH_TARGET = re.compile(r"`\(?([.$\w]+)\)?")
_CONST = re.compile(r"^c\[(0x[0-9a-f]+)\]\[(0x[0-9a-f]+)\]$")
_GUARD = re.compile(r"^@(!?)(U?P[0-6T])\s+(.*)$")
_REG = re.compile(r"^(U?R)(\d+|Z)((?:\.[\w]+)*)$")
_PRED = re.compile(r"^(!?)(U?P)([0-6]|T)$")
_IMM = re.compile(r"^-?(0x[0-9a-f]+|\d+)$")


# ---------------------------------------------------------------------------------------------
# Parsing: instructions, labels, basic blocks, loops
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Block:
    start: int
    instructions: list  # SASS text of each instruction
    succ: list = dataclasses.field(default_factory=list)


def _lines(sass: str):
    """``(instructions, labels)``: each instruction's text (guard included) in address order, and
    label name -> instruction index (branch targets, called functions)."""
    instrs, labels = [], {}
    for line in sass.splitlines():
        m = _INSTR.match(line)
        if m:
            instrs.append(m.group(2))
            continue
        m = _LABEL.match(line.strip())
        if m:
            labels[m.group(1)] = len(instrs)
    return instrs, labels


def _is_branch(text: str) -> bool:
    return bool(re.search(r"\bBRA\b", text))


def parse_sass(sass: str) -> list[Block]:
    """Basic blocks of one kernel's SASS, in address order, with successor indices."""
    instrs, labels = _lines(sass)
    leaders = {0} | set(labels.values())
    for i, text in enumerate(instrs):
        if _is_branch(text) or re.search(r"\b(EXIT|RET)\b", text):
            leaders.add(i + 1)
    leaders = sorted(x for x in leaders if x < len(instrs))
    starts = {s: b for b, s in enumerate(leaders)}
    blocks = []
    for b, s in enumerate(leaders):
        end = leaders[b + 1] if b + 1 < len(leaders) else len(instrs)
        blocks.append(Block(s, instrs[s:end]))
    for b, block in enumerate(blocks):
        last = block.instructions[-1]
        predicated = last.startswith("@")
        m = _BRANCH_TARGET.search(last) if _is_branch(last) else None
        if m:
            block.succ.append(starts[labels[m.group(1)]])
            if predicated and b + 1 < len(blocks):
                block.succ.append(b + 1)
        elif re.search(r"\b(EXIT|RET)\b", last):
            if predicated and b + 1 < len(blocks):
                block.succ.append(b + 1)
        elif b + 1 < len(blocks):
            block.succ.append(b + 1)
    return blocks


def natural_loops(blocks: list[Block]) -> list[tuple[int, set]]:
    """``(header, body)`` of every natural loop (a back edge latch -> header with header <= latch);
    an infinite self-loop after EXIT (the kernel's padding trap) is not a loop of the program."""
    preds = {b: [] for b in range(len(blocks))}
    for b, block in enumerate(blocks):
        for s in block.succ:
            preds[s].append(b)
    loops = []
    for latch, block in enumerate(blocks):
        for header in block.succ:
            if header > latch or (header == latch and len(block.instructions) == 1):
                continue
            body, stack = {header, latch}, ([latch] if latch != header else [])
            while stack:
                for p in preds[stack.pop()]:
                    if p not in body:
                        body.add(p)
                        stack.append(p)
            loops.append((header, body))
    return loops


def opcode(text: str) -> str:
    """The opcode with its modifiers (``IMAD.WIDE.U32``), guard stripped."""
    m = _GUARD.match(text)
    return (m.group(3) if m else text).split(None, 1)[0]


def access_bytes(text: str) -> int:
    """Bytes per thread of a global load or store (``LDG.E.128``: 16)."""
    m = re.search(r"\b(?:LDG|STG|LDGSTS)\.E(\S*)", text)
    suffix = m.group(1) if m else ""
    for tag, nbytes in ((".128", 16), (".64", 8), (".U16", 2), (".S16", 2), (".U8", 1), (".S8", 1)):
        if tag in suffix:
            return nbytes
    return 4


def is_global_load(text: str) -> bool:
    return bool(re.search(r"\b(LDG|LDGSTS)\b", text))


def is_global_store(text: str) -> bool:
    return bool(re.search(r"\bSTG\b", text))


# ---------------------------------------------------------------------------------------------
# Pipes
# ---------------------------------------------------------------------------------------------

# SASS opcode (the name before the first '.') -> pipe, after Nsight Compute's pipeline descriptions
# (Kernel Profiling Guide, "Pipelines"): fma = FP32 arithmetic, and through its heavy half
# (fmaheavy) integer multiply-add; alu = integer add, logic, shifts, compares, selects, moves; xu =
# transcendentals (MUFU) and data-type conversions; lsu = loads, stores, shuffles, special-register
# reads; uniform = the per-warp scalar datapath; tensor = mma; the rest (branches, barriers,
# constant loads, NOP) issue without a throughput limit of their own here.
PIPE_OF = {
    **dict.fromkeys(("FFMA", "FADD", "FMUL", "HFMA2", "HADD2", "HMUL2", "FSWZADD"), "fma"),
    **dict.fromkeys(("IMAD", "IMUL", "IDP", "IMADSP"), "fmaheavy"),
    **dict.fromkeys(("IADD3", "IADD", "VIADD", "LOP3", "LOP", "SHF", "SHL", "SHR", "LEA", "ISETP", "SEL", "PRMT",
                     "MOV", "IABS", "IMNMX", "VIMNMX", "VIADDMNMX", "SGXT", "PLOP3", "P2R", "R2P", "CS2R", "BMSK",
                     "FSET", "FSETP", "FMNMX", "FSEL", "FCHK", "VOTE", "BREV"), "alu"),
    **dict.fromkeys(("MUFU", "F2F", "F2I", "I2F", "F2FP", "I2FP", "FRND", "POPC", "FLO"), "xu"),
    **dict.fromkeys(("LDG", "STG", "LDS", "STS", "LD", "ST", "ATOM", "ATOMS", "ATOMG", "RED", "SHFL", "S2R", "LDSM",
                     "STSM", "LDGSTS", "MATCH"), "lsu"),
    **dict.fromkeys(("HMMA", "IMMA", "HGMMA"), "tensor"),
}


def pipe_of(op: str) -> str:
    """The pipe of a SASS opcode (see :data:`PIPE_OF`); uniform-datapath ops (``U*``, ``R2UR``,
    ``S2UR``) are ``uniform``; the others ``other``."""
    name = op.split(".", 1)[0]
    if name in PIPE_OF:
        return PIPE_OF[name]
    if name.startswith("U") or name in ("R2UR", "S2UR"):
        return "uniform"
    return "other"


# ---------------------------------------------------------------------------------------------
# The path one warp runs
# ---------------------------------------------------------------------------------------------


# iterations of identical path and register steps a loop must show before it is fast-forwarded: more
# than the 8-step period of the kernels' Philox blocks, so a register like t % 8 shows its wrap first
FAST_FORWARD_WINDOW = 10


class SassError(RuntimeError):
    """A kernel's path could not be decided (a backward branch on an unknown value, a runaway loop)."""


@dataclasses.dataclass
class Trace:
    """What one thread of one program executes (every warp of the program issues the same, up to the
    thread-dependent branches listed in ``divergent``)."""

    counts: dict  # instruction index -> times executed
    texts: list  # every instruction's text (index -> text)
    assumed: list  # indices of data-dependent forward branches taken as not taken
    divergent: list  # indices of thread-dependent branches (the fall-through side counted)
    round_trips: int  # global-load round trips a warp waits for (a load's result used: one wait)
    nested: frozenset = frozenset()  # instructions of loops nested in another loop
    broadcast: frozenset = frozenset()  # global accesses whose address is the same for every thread
    skipped_iterations: int = 0  # loop iterations counted without being executed (see run)
    addresses: dict = dataclasses.field(default_factory=dict)  # access -> its first address (None: unknown)
    sources: dict = dataclasses.field(default_factory=dict)  # access -> constant-bank words its address uses

    @property
    def issued(self) -> int:
        """Instructions executed (the path's length)."""
        return sum(self.counts.values())

    def pipes(self) -> dict:
        """pipe -> instructions executed (``fma`` includes the ``fmaheavy`` ones: both halves)."""
        out: dict = {}
        for i, n in self.counts.items():
            p = pipe_of(opcode(self.texts[i]))
            out[p] = out.get(p, 0) + n
        out["fma"] = out.get("fma", 0) + out.get("fmaheavy", 0)
        return out

    def global_bytes(self, threads: int, *, dram_only: bool = True, shared=frozenset()) -> tuple[int, int]:
        """``(read, written)`` global bytes of one program of ``threads`` threads: an access whose
        address differs per thread counts for every thread, one whose address is the same for all
        (a scalar parameter, a per-program partial sum) once. ``dram_only`` leaves out the loads of
        loops nested in another loop (they re-read what L2 holds: the recurrent product's operands)
        and the accesses listed in ``shared`` (the same addresses in every program: a per-channel
        table that every program re-reads from L2)."""
        rd = wr = 0
        for i, n in self.counts.items():
            t = self.texts[i]
            if dram_only and i in shared:
                continue
            nbytes = n * access_bytes(t) * (1 if i in self.broadcast else threads)
            if is_global_load(t) and not (dram_only and i in self.nested):
                rd += nbytes
            elif is_global_store(t):
                wr += nbytes
        return rd, wr


def _f16_bits(text: str) -> int:
    return struct.unpack("<H", struct.pack("<e", float(text)))[0]


def _split_operands(s: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _signed(v: int, bits: int = 32) -> int:
    return v - (1 << bits) if v >> (bits - 1) & 1 else v


def _lut(lut: int, a: int, b: int, c: int, mask: int) -> int:
    r = 0
    for idx in range(8):
        if lut >> idx & 1:
            r |= (a if idx & 4 else ~a) & (b if idx & 2 else ~b) & (c if idx & 1 else ~c)
    return r & mask


_CMP = {"EQ": lambda a, b: a == b, "NE": lambda a, b: a != b, "LT": lambda a, b: a < b, "LE": lambda a, b: a <= b,
        "GT": lambda a, b: a > b, "GE": lambda a, b: a >= b}
_BOOL = {"AND": lambda a, b: a and b, "OR": lambda a, b: a or b, "XOR": lambda a, b: a != b}
_WIDTH_REGS = {".128": 4, ".64": 2}


@dataclasses.dataclass
class _Ins:
    index: int
    guard: str | None  # the guard predicate operand ("P0", "!UP1")
    op: str
    name: str
    mods: tuple
    args: list
    text: str
    io: tuple | None = None  # (registers written, registers read), filled on first use


class _Machine:
    """Registers as (value or None, thread-dependent) pairs; see :func:`run`."""

    def __init__(self, const: dict, tid: int, ctaid: int):
        self.r: dict = {}
        self.p: dict = {}
        self.const = const
        self.tid, self.ctaid = tid, ctaid
        self.pc = 0
        self.cmps: dict = {}  # instruction -> (x, y) of the integer compares since the last snapshot

    # -- operands (each distinct operand string parsed once: _operand, _reg_key, _pred_key) ------
    def val(self, s: str, pair: bool = False):
        """``(value, tainted)`` of a source operand (None: unknown); ``pair``: a 64-bit register pair."""
        kind, payload, neg, inv, absv = _operand(s)
        if kind == "imm":
            return (payload, False)
        if kind == "zero":
            return (0, False)
        if kind == "const":
            if pair:
                lo, hi = self.const.get(payload), self.const.get(payload + 4)
                if neg or inv or absv:  # a 64-bit operand's modifiers: not modelled, the value unknown
                    return (None, False)
                return (None if lo is None or hi is None else lo | hi << 32, False)
            v, t = self.const.get(payload), False
        elif kind != "reg":
            return (None, False)
        else:
            v, t = self.r.get(payload[0], (None, False))
            if pair:
                hi, th = self.r.get(payload[1], (None, False))
                return (None if v is None or hi is None else v | hi << 32, t or th)
        if v is None:
            return (None, t)
        if absv:
            v = abs(_signed(v)) & M32
        if inv:
            v = ~v & M32
        if neg:
            v = -v & M32
        return (v, t)

    def pred(self, s: str):
        key = _pred_key(s)
        if key is None:
            return (None, False)
        neg, name = key
        if name is None:
            v, t = True, False
        else:
            v, t = self.p.get(name, (None, False))
        if v is None:
            return (None, t)
        return ((not v) if neg else v, t)

    def set(self, dst: str, value, taint: bool, regs: int = 1):
        key = _reg_key(dst)
        if key is None:
            return
        kind, num = key
        if regs == 1:
            self.r[f"{kind}{num}"] = (None if value is None else value & M32, taint)
            return
        for k in range(regs):
            self.r[f"{kind}{num + k}"] = (None if value is None else (value >> (32 * k)) & M32, taint)

    def set_pred(self, dst: str, value, taint: bool):
        key = _pred_key(dst)
        if key is not None and key[1] is not None:
            self.p[key[1]] = (value, taint)


@functools.lru_cache(maxsize=None)
def _operand(s: str) -> tuple:
    """``(kind, payload, negated, inverted, absolute)``: kind ``imm`` (payload the 32-bit value),
    ``zero``, ``const`` (the byte offset in bank 0), ``reg`` (payload: the register and the next
    one's names) or ``other`` (anything this reader does not evaluate)."""
    neg = inv = absv = False
    if s.startswith("|") and s.endswith("|"):
        s, absv = s[1:-1], True
    if s.startswith("-") and not _IMM.match(s):
        s, neg = s[1:], True
    if s.startswith("~"):
        s, inv = s[1:], True
    if _IMM.match(s):
        return ("imm", int(s, 0) & M32, False, False, False)
    m = _CONST.match(s)
    if m:
        return ("const" if m.group(1) == "0x0" else "other", int(m.group(2), 16), neg, inv, absv)
    m = _REG.match(s)
    if not m or m.group(3).replace(".reuse", "") not in ("", ".64"):
        return ("other", None, False, False, False)
    kind, num = m.group(1), m.group(2)
    if num == "Z":
        return ("zero", None, False, False, False)
    return ("reg", (kind + num, f"{kind}{int(num) + 1}"), neg, inv, absv)


@functools.lru_cache(maxsize=None)
def _reg_key(s: str):
    m = _REG.match(s.strip())
    return None if not m or m.group(2) == "Z" else (m.group(1), int(m.group(2)))


@functools.lru_cache(maxsize=None)
def _pred_key(s: str):
    """``(negated, name)`` of a predicate operand (name None for the constant true PT/UPT), or None."""
    m = _PRED.match(s.strip())
    if not m:
        return None
    neg, kind, num = m.groups()
    return (neg == "!", None if num == "T" else kind + num)


def _decode(index: int, text: str) -> _Ins:
    guard = None
    m = _GUARD.match(text)
    if m:
        guard = m.group(1) + m.group(2)
        text_body = m.group(3)
    else:
        text_body = text
    parts = text_body.split(None, 1)
    op = parts[0]
    args = _split_operands(parts[1]) if len(parts) > 1 else []
    name, *mods = op.split(".")
    return _Ins(index, guard, op, name, tuple(mods), args, text)


def _is_pred(s: str) -> bool:
    return bool(_PRED.match(s.strip()))


def _dest_regs(ins: _Ins) -> int:
    for tag, n in _WIDTH_REGS.items():
        if tag in ins.op:
            return n
    if ins.name in ("LDSM", "STSM"):  # .x1, .2, .4 matrices: one register each
        return 4 if ins.op.endswith(".4") else 2 if ins.op.endswith(".2") else 1
    if ins.name == "HMMA":  # the accumulator fragment: 4 fp32 or 2 packed fp16 registers
        return 4 if ins.op.endswith("F32") else 2
    if "WIDE" in ins.mods:
        return 2
    return 1


def _dests(ins: _Ins) -> tuple[list, list]:
    """``(register operands written, predicate operands written)`` of an instruction we do not
    evaluate: the leading predicates and the first register after them (``*SETP``: predicates only)."""
    a = ins.args
    if not a or ins.name in _NO_DEST:
        return [], []
    preds = []
    k = 0
    while k < len(a) and _is_pred(a[k]):
        preds.append(a[k])
        k += 1
    if ins.name.endswith("SETP") or k >= len(a):
        return [], preds
    return [a[k]], preds


_NO_DEST = frozenset(("STG", "STS", "ST", "RED", "STSM", "LDGSTS", "BAR", "MEMBAR", "DEPBAR", "LDGDEPBAR", "NOP",
                      "BRA", "EXIT", "CALL", "RET", "BSSY", "BSYNC", "WARPSYNC", "BREAK", "YIELD", "ERRBAR", "CCTL",
                      "FENCE", "BMOV", "NANOSLEEP", "BPT", "ARRIVES", "SYNCS", "UTMACCTL", "UTMALDG", "UTMASTG"))


def _invalidate(mc: _Machine, ins: _Ins):
    regs, preds = _dests(ins)
    for d in regs:
        mc.set(d, None, True, _dest_regs(ins))
    for d in preds:
        mc.set_pred(d, None, True)


def _execute(mc: _Machine, ins: _Ins, taint_in: bool):
    """Apply one non-control instruction whose guard holds for this thread (``taint_in``: the guard
    is thread-dependent, so the result is too)."""
    a, n, mods = ins.args, ins.name, ins.mods
    fn = _ALU_OPS.get(n[1:] if n.startswith("U") and n[1:] in _ALU_OPS else n)
    if fn is not None:
        fn(mc, a, mods, taint_in)
    elif n in ("S2R", "S2UR", "CS2R"):
        src = a[1] if len(a) > 1 else ""
        if src == "SRZ":
            mc.set(a[0], 0, taint_in, 2)
        elif src == "SR_TID.X":
            mc.set(a[0], mc.tid, True)
        elif src in ("SR_TID.Y", "SR_TID.Z", "SR_CTAID.Y", "SR_CTAID.Z"):
            mc.set(a[0], 0, taint_in)
        elif src == "SR_CTAID.X":
            mc.set(a[0], mc.ctaid, taint_in)
        elif src == "SR_LANEID":
            mc.set(a[0], mc.tid % 32, True)
        else:
            mc.set(a[0], None, True)
    elif n in ("LDC", "ULDC"):
        wide = ".64" in ins.op
        v, _ = mc.val(a[1], pair=wide)
        mc.set(a[0], v, taint_in, 2 if wide else 1)
    elif n in ("R2UR", "S2UR"):
        v, t = mc.val(a[1])
        mc.set(a[0], v, t or taint_in)
    elif n == "HFMA2" and len(a) >= 5 and "RZ" in (a[1].lstrip("-"), a[2].lstrip("-")):
        try:  # the zero / small-constant idiom: the two fp16 immediates (high half first) are the bits
            mc.set(a[0], _f16_bits(a[3]) << 16 | _f16_bits(a[4]), taint_in)
        except (ValueError, struct.error, OverflowError):
            mc.set(a[0], None, True)
    else:  # floating point, loads, shuffles, conversions, mma: results unknown
        _invalidate(mc, ins)


# -- integer and predicate instructions (also their U* uniform twins) ---------------------------


def _vals(mc, ops, pair_last=False):
    out, taint = [], False
    for k, s in enumerate(ops):
        v, t = mc.val(s, pair=pair_last and k == len(ops) - 1)
        out.append(v)
        taint = taint or t
    return out, taint


def _op_mov(mc, a, mods, tin):
    v, t = mc.val(a[1])
    mc.set(a[0], v, t or tin)


def _split_preds(a):
    """``(dest, leading predicate dests, sources, trailing predicate sources)``."""
    dest, rest = a[0], a[1:]
    lead = []
    while rest and _is_pred(rest[0]):
        lead.append(rest.pop(0))
    trail = []
    while rest and _is_pred(rest[-1]):
        trail.insert(0, rest.pop())
    return dest, lead, rest, trail


def _op_iadd3(mc, a, mods, tin):
    dest, lead, srcs, trail = _split_preds(a)
    vals, taint = _vals(mc, srcs)
    cins = [mc.pred(p) for p in trail] if "X" in mods else []
    taint = taint or tin or any(t for _, t in cins)
    if any(v is None for v in vals) or any(c is None for c, _ in cins):
        mc.set(dest, None, taint)
        for p in lead:
            mc.set_pred(p, None, taint)
        return
    total = sum(vals) + sum(int(c) for c, _ in cins)
    mc.set(dest, total & M32, taint)
    negated = any(s.startswith("-") and not _IMM.match(s) for s in srcs)
    first = (vals[0] + vals[1]) if len(vals) > 1 else vals[0]
    carries = [first >> 32 & 1, ((first & M32) + sum(vals[2:])) >> 32 & 1]
    for k, p in enumerate(lead):
        mc.set_pred(p, None if negated else bool(carries[k]), taint)


def _op_viadd(mc, a, mods, tin):
    vals, taint = _vals(mc, a[1:3])
    mc.set(a[0], None if None in vals else sum(vals) & M32, taint or tin)


def _op_imad(mc, a, mods, tin):
    dest, lead, srcs, trail = _split_preds(a)
    wide = "WIDE" in mods
    unsigned = "U32" in mods
    vals, taint = _vals(mc, srcs[:2])
    c, tc = mc.val(srcs[2], pair=wide) if len(srcs) > 2 else (0, False)
    cins = [mc.pred(p) for p in trail] if "X" in mods else []
    taint = taint or tc or tin or any(t for _, t in cins)
    if None in vals or c is None or any(v is None for v, _ in cins):
        mc.set(dest, None, taint, 2 if wide else 1)
        for p in lead:
            mc.set_pred(p, None, taint)
        return
    x, y = vals
    if not unsigned:
        x, y = _signed(x), _signed(y)
    prod = x * y
    if wide:
        mc.set(dest, (prod + c) & M64, taint, 2)
    elif "HI" in mods:
        mc.set(dest, ((prod >> 32) + c + sum(int(v) for v, _ in cins)) & M32, taint)
    else:
        mc.set(dest, (prod + c + sum(int(v) for v, _ in cins)) & M32, taint)
    for p in lead:
        mc.set_pred(p, None, taint)


def _op_lea(mc, a, mods, tin):
    dest, lead, srcs, trail = _split_preds(a)
    cins = [mc.pred(p) for p in trail] if "X" in mods else []
    if "HI" in mods:
        if "SX32" in mods:  # LEA.HI[.X].SX32 d, a, b, sh: b + hi(sext(a) << sh)
            vals, taint = _vals(mc, srcs[:3])
            if None not in vals:
                lo, b, sh = vals
                hi = M32 if lo >> 31 else 0
                vals = [lo, b, hi, sh]
        else:  # LEA.HI[.X] d, a, b, c, sh: b + hi((c:a) << sh)
            vals, taint = _vals(mc, srcs[:4])
            if None not in vals:
                lo, b, hi, sh = vals
                vals = [lo, b, hi, sh]
        taint = taint or tin or any(t for _, t in cins)
        if None in vals or any(v is None for v, _ in cins):
            mc.set(dest, None, taint)
            return
        lo, b, hi, sh = vals
        shifted = ((hi << 32 | lo) << (sh & 63)) >> 32 & M32
        mc.set(dest, (b + shifted + sum(int(v) for v, _ in cins)) & M32, taint)
        for p in lead:
            mc.set_pred(p, None, taint)
        return
    vals, taint = _vals(mc, srcs[:3])
    taint = taint or tin
    if None in vals:
        mc.set(dest, None, taint)
        for p in lead:
            mc.set_pred(p, None, taint)
        return
    x, b, sh = vals
    full = ((x << (sh & 31)) & M32) + b
    mc.set(dest, full & M32, taint)
    for p in lead:
        mc.set_pred(p, bool(full >> 32), taint)


def _op_shf(mc, a, mods, tin):
    vals, taint = _vals(mc, a[1:4])
    taint = taint or tin
    if None in vals:
        mc.set(a[0], None, taint)
        return
    lo, sh, hi = vals
    x = hi << 32 | lo
    signed = any(m.startswith("S") for m in mods)
    if signed:
        x = x - (1 << 64) if x >> 63 else x
    sh &= 63 if "U64" in mods or "S64" in mods else 63
    y = (x << sh) if "L" in mods else (x >> sh)
    y &= M64
    mc.set(a[0], (y >> 32) & M32 if "HI" in mods else y & M32, taint)


def _op_lop3(mc, a, mods, tin):
    if _is_pred(a[0]):  # LOP3.LUT Pd, Rd, a, b, c, lut, Pin
        pd, rd, srcs = a[0], a[1], a[2:5]
        lut = a[5]
    else:
        pd, rd, srcs, lut = None, a[0], a[1:4], a[4]
    vals, taint = _vals(mc, srcs)
    taint = taint or tin
    if None in vals:
        mc.set(rd, None, taint)
        if pd:
            mc.set_pred(pd, None, taint)
        return
    r = _lut(int(lut, 0), *vals, M32)
    mc.set(rd, r, taint)
    if pd:
        mc.set_pred(pd, r != 0, taint)


def _op_plop3(mc, a, mods, tin):
    ps = [mc.pred(s) for s in a[2:5]]
    taint = tin or any(t for _, t in ps)
    if any(v is None for v, _ in ps):
        mc.set_pred(a[0], None, taint)
        mc.set_pred(a[1], None, taint)
        return
    bits = [int(v) for v, _ in ps]
    mc.set_pred(a[0], bool(_lut(int(a[5], 0), *bits, 1)), taint)
    if len(a) > 6:
        mc.set_pred(a[1], bool(_lut(int(a[6], 0), *bits, 1)), taint)


def _op_sel(mc, a, mods, tin):
    p, tp = mc.pred(a[3])
    if p is None:
        mc.set(a[0], None, True)
        return
    v, t = mc.val(a[1] if p else a[2])
    mc.set(a[0], v, t or tp or tin)


def _op_isetp(mc, a, mods, tin):
    cmp = next(m for m in mods if m in _CMP)
    bop = next(m for m in mods if m in _BOOL)
    unsigned = "U32" in mods
    ext = "EX" in mods
    vals, taint = _vals(mc, a[2:4])
    c, tc = mc.pred(a[4])
    chain, tch = mc.pred(a[5]) if ext and len(a) > 5 else (True, False)
    taint = taint or tc or tch or tin
    if None in vals or c is None or chain is None:
        mc.set_pred(a[0], None, taint)
        mc.set_pred(a[1], None, taint)
        return
    x, y = vals if unsigned else (_signed(vals[0]), _signed(vals[1]))
    mc.cmps[mc.pc] = (x, y)
    if ext:  # the high words, the low words' result chained in
        if cmp in ("EQ",):
            r = x == y and chain
        elif cmp == "NE":
            r = x != y or chain
        else:
            r = _CMP[cmp](x, y) and x != y or (x == y and chain)
    else:
        r = _CMP[cmp](x, y)
    mc.set_pred(a[0], _BOOL[bop](r, c), taint)
    mc.set_pred(a[1], _BOOL[bop](not r, c), taint)


def _op_iabs(mc, a, mods, tin):
    v, t = mc.val(a[1])
    mc.set(a[0], None if v is None else abs(_signed(v)) & M32, t or tin)


def _set_min_max(mc, dest, vals, taint, pred, mods, tin):
    """``dest = min(*vals)`` where the predicate ``pred`` holds (or is absent), else ``max``."""
    p, tp = mc.pred(pred) if pred is not None else (True, False)
    if None in vals or p is None:
        mc.set(dest, None, True)
        return
    x, y = vals if "U32" in mods else (_signed(vals[0]), _signed(vals[1]))
    mc.set(dest, (min(x, y) if p else max(x, y)) & M32, taint or tp or tin)


def _op_imnmx(mc, a, mods, tin):
    vals, taint = _vals(mc, a[1:3])
    _set_min_max(mc, a[0], vals, taint, a[3] if len(a) > 3 else None, mods, tin)


def _op_viaddmnmx(mc, a, mods, tin):
    """``VIADDMNMX d, a, b, c, p``: ``min(a + b, c)`` where ``p`` holds, else ``max`` (sm_90)."""
    vals, taint = _vals(mc, a[1:4])
    total = None if None in vals[:2] else (vals[0] + vals[1]) & M32
    _set_min_max(mc, a[0], [total, vals[2]], taint, a[4] if len(a) > 4 else None, mods, tin)


def _op_sgxt(mc, a, mods, tin):
    vals, taint = _vals(mc, a[1:3])
    if None in vals:
        mc.set(a[0], None, taint or tin)
        return
    v, bits = vals
    bits = min(bits, 32)
    v &= (1 << bits) - 1 if bits else 0
    if "U32" not in mods and bits and v >> (bits - 1) & 1:
        v -= 1 << bits
    mc.set(a[0], v & M32, taint or tin)


def _op_prmt(mc, a, mods, tin):
    vals, taint = _vals(mc, a[1:4])
    if None in vals or mods:
        mc.set(a[0], None, taint or tin)
        return
    x, sel, y = vals
    src = (y << 32 | x).to_bytes(8, "little")
    out = 0
    for k in range(4):
        s = sel >> (4 * k) & 0xF
        byte = src[s & 7]
        if s & 8:
            byte = 0xFF if byte & 0x80 else 0
        out |= byte << (8 * k)
    mc.set(a[0], out, taint or tin)


def _op_p2r(mc, a, mods, tin):
    base, tb = mc.val(a[2])
    mask, _ = mc.val(a[3])
    if base is None or mask is None:
        mc.set(a[0], None, True)
        return
    out, taint = base & ~mask & M32, tb or tin
    for k in range(7):
        if mask >> k & 1:
            v, t = mc.pred(f"{'UP' if a[1] == 'UPR' else 'P'}{k}")
            if v is None:
                mc.set(a[0], None, True)
                return
            out |= int(v) << k
            taint = taint or t
    mc.set(a[0], out, taint)


def _op_r2p(mc, a, mods, tin):
    v, t = mc.val(a[1])
    mask, _ = mc.val(a[2])
    for k in range(7):
        if mask is not None and mask >> k & 1:
            mc.set_pred(f"P{k}", None if v is None else bool(v >> k & 1), t or tin)


_ALU_OPS = {
    "MOV": _op_mov, "IADD3": _op_iadd3, "VIADD": _op_viadd, "IMAD": _op_imad, "LEA": _op_lea, "SHF": _op_shf,
    "LOP3": _op_lop3, "PLOP3": _op_plop3, "SEL": _op_sel, "FSEL": _op_sel, "ISETP": _op_isetp, "IABS": _op_iabs,
    "IMNMX": _op_imnmx, "VIMNMX": _op_imnmx, "VIADDMNMX": _op_viaddmnmx,
    "SGXT": _op_sgxt, "PRMT": _op_prmt, "P2R": _op_p2r, "R2P": _op_r2p,
}


@functools.lru_cache(maxsize=64)
def _program(sass: str):
    """Decoded instructions, labels, and the instructions of loops nested in another loop."""
    instrs, labels = _lines(sass)
    decoded = [_decode(i, t) for i, t in enumerate(instrs)]
    blocks = parse_sass(sass)
    loops = natural_loops(blocks)
    nested = set()
    for h, body in loops:
        if any(body < other for _, other in loops):
            for b in body:
                nested |= set(range(blocks[b].start, blocks[b].start + len(blocks[b].instructions)))
    return instrs, labels, decoded, frozenset(nested)


def run(sass: str, const: dict, *, program: int = 0, tid: int = 0, max_steps: int = 20_000_000,
        fast_forward_loops: bool = True) -> Trace:
    """Execute one thread (``tid``) of one program (``program``, ``blockIdx.x``) of a kernel's SASS.

    ``const``: the constant bank, byte offset -> 32-bit word (the launch's arguments: see
    ``perf.launches.kernel_params``). Integer, predicate, uniform and control-flow instructions are
    evaluated; every other result is unknown (module docstring). A loop whose last iterations took
    the same path with every known register moving by the same step each time is fast-forwarded:
    ``k`` iterations are counted at once when an iteration run from the registers advanced by ``k``
    steps still takes that path (a loop counter against its bound decides once, so the largest such
    ``k`` is found by halving). Returns the :class:`Trace`.
    """
    instrs, labels, decoded, nested = _program(sass)
    mc = _Machine(const, tid, program)
    counts: dict = {}
    assumed, divergent, calls = [], [], []
    per_thread, uniform = set(), set()
    addresses: dict = {}
    prov: dict = {}  # register -> constant-bank offsets it is computed from
    sources: dict = {}  # global access -> constant-bank offsets its address is computed from
    state = dict(outstanding=set(), round_trips=0)
    history: dict = {}  # loop header -> its last iteration snapshots
    executed = skipped = 0

    def step(pc: int) -> int:
        """Execute instruction ``pc``; returns the next pc (-1: the thread exits)."""
        ins = decoded[pc]
        mc.pc = pc
        counts[pc] = counts.get(pc, 0) + 1
        writes, reads = _regs_io(ins)
        if ins.name in ("LDG", "STG", "LDGSTS"):
            origin = frozenset().union(*(prov.get(r, ()) for r in reads)) | _consts(ins.text)
            sources[pc] = sources.get(pc, frozenset()) | origin
        if writes:  # which constant-bank words (kernel arguments) each register is computed from
            origin = frozenset() if ins.name in ("LDG", "LDS", "LD", "SHFL") else \
                frozenset().union(*(prov.get(r, ()) for r in reads)) | _consts(ins.text)
            for r in writes:
                prov[r] = origin
        if state["outstanding"]:  # a load's result read or overwritten: the warp waits for that round trip
            if (reads | writes) & state["outstanding"] or (ins.name == "DEPBAR" and "async" in state["outstanding"]):
                state["round_trips"] += 1
                state["outstanding"] = set()
        g, tg = (True, False) if ins.guard is None else mc.pred(ins.guard)
        nxt = pc + 1
        if ins.name == "BRA":
            target = labels[_BRANCH_TARGET.search(ins.text).group(1)]
            if "DIV" in ins.mods:
                pass  # taken only when the warp has diverged; here it is converged
            elif g is None:
                if target <= pc:
                    raise SassError(f"the loop branch at instruction {pc} ({ins.text}) depends on a loaded or "
                                    f"floating-point value")
                assumed.append(pc)
            elif tg:
                divergent.append(pc)
                if target <= pc and g:  # a loop with a per-thread trip count: this thread's
                    nxt = target
            elif g:
                nxt = target
        elif ins.name == "EXIT":
            if g is None:
                assumed.append(pc)
            elif tg:
                divergent.append(pc)  # some lanes leave, the others go on
            elif g:
                return -1
        elif ins.name == "CALL":
            calls.append(pc + 1)
            nxt = labels[_BRANCH_TARGET.search(ins.text).group(1)]
        elif ins.name == "RET":
            if not calls:
                raise SassError(f"RET at instruction {pc} without a CALL")
            nxt = calls.pop()
        elif ins.name == "BPT":
            raise SassError(f"trap at instruction {pc}: {ins.text}")
        elif g is None:
            _invalidate(mc, ins)
        elif g:
            if ins.name in ("LDG", "STG", "LDGSTS"):  # before the load overwrites its address
                address = next((x for x in ins.args if "[" in x), "")
                varies = any(mc.r.get(r, (None, True))[1] for r in _reg_names(address.split("][")[-1]))
                (per_thread if varies else uniform).add(pc)
                if pc not in addresses:
                    addresses[pc] = _address(mc, address)
            _execute(mc, ins, tg)
            if ins.name == "LDG":
                state["outstanding"] |= _regs_io(ins)[0]
            elif ins.name == "LDGSTS":
                state["outstanding"].add("async")
        return nxt

    def snapshot(path):
        snap = (dict(mc.r), dict(mc.p), path, state["round_trips"], mc.cmps)
        mc.cmps = {}
        return snap

    def fast_forward(header: int, snaps: list) -> bool:
        """Count ``k`` iterations of the loop at ``header`` at once (see :func:`run`); False if the
        last iterations do not allow it."""
        nonlocal skipped
        path = snaps[-1][2]
        if any(sn[2] != path for sn in snaps[1:]) or any(sn[1] != snaps[-1][1] for sn in snaps) or \
                len({b[3] - a[3] for a, b in zip(snaps, snaps[1:])}) != 1:
            return False
        last = snaps[-1][0]
        deltas = {}
        for reg, (v, _) in last.items():
            vals = [sn[0].get(reg, (None, False))[0] for sn in snaps]
            steps = {(b - a) & M32 for a, b in zip(vals, vals[1:])} if None not in vals else {None}
            deltas[reg] = steps.pop() if len(steps) == 1 else None
        # k - 1 iterations skipped, the k-th run: every moving register stays within its half of the
        # 32-bit range (no wrap, no sign change) ...
        k = 1 << 24
        for reg, d in deltas.items():
            if d:
                v = last[reg][0]
                half_end = (1 << 31) if v < (1 << 31) else (1 << 32)
                signed = d if d < (1 << 31) else d - (1 << 32)
                room = (half_end - 1 - v) // signed if signed > 0 else (v - (half_end - (1 << 31))) // -signed
                k = min(k, room)
        # ... and every compare of the iteration keeps its outcome (its operands' difference moves by
        # the same step each iteration and does not reach or cross zero before the k-th)
        for pc_cmp in snaps[-1][4]:
            pairs = [sn[4].get(pc_cmp) for sn in snaps[1:]]
            if any(pair is None for pair in pairs):
                return False
            diffs = [a - b for a, b in pairs]
            moves = {b - a for a, b in zip(diffs, diffs[1:])}
            if len(moves) != 1:
                return False
            move, diff = moves.pop(), diffs[-1]
            if move and (diff == 0 or (diff > 0) != (move > 0)):
                k = min(k, (abs(diff) - 1) // abs(move) if diff else 0)
        if k < 2:
            return False
        base = (dict(mc.r), dict(mc.p), dict(counts), state["round_trips"])
        mc.r = {reg: ((v + (k - 1) * deltas[reg]) & M32 if v is not None and deltas.get(reg) is not None else None, t)
                for reg, (v, t) in last.items()}
        state["outstanding"] = set()
        pc = header
        for expected in path:  # the k-th iteration, run: it must take the same path
            if pc != expected:
                break
            pc = step(pc)
        else:
            if pc == header:
                for i in path:
                    counts[i] += k - 1
                state["round_trips"] += (k - 1) * (snaps[-1][3] - snaps[-2][3])
                skipped += k - 1
                return True
        mc.r, mc.p = base[0], base[1]
        counts.clear()
        counts.update(base[2])
        state["round_trips"], state["outstanding"] = base[3], set()
        return False

    pc = 0
    iteration: list = []  # instructions since the last back edge
    while True:
        if pc == -1 or pc == len(decoded):
            break
        if not 0 <= pc < len(decoded):
            raise SassError(f"jumped outside the kernel (instruction {pc})")
        executed += 1
        if executed > max_steps:
            raise SassError(f"more than {max_steps} instructions executed: a loop that does not end?")
        start = pc
        nxt = step(pc)
        iteration.append(start)
        if 0 <= nxt <= start and decoded[start].name == "BRA":  # a back edge taken: one loop iteration done
            if fast_forward_loops:
                # an iteration of a loop without a nested loop runs from its header, each instruction once
                path = tuple(iteration) if iteration[0] == nxt and len(set(iteration)) == len(iteration) else None
                snaps = history.setdefault(nxt, [])
                snaps.append(snapshot(path))
                if len(snaps) > FAST_FORWARD_WINDOW:
                    del snaps[0]
                    if path and fast_forward(nxt, snaps):
                        history[nxt] = []
            iteration = []
        pc = nxt
    return Trace(counts, instrs, assumed, divergent, state["round_trips"], nested, frozenset(uniform - per_thread),
                 skipped, addresses, sources)


@functools.lru_cache(maxsize=None)
def _consts(text: str) -> frozenset:
    """Byte offsets of the bank-0 constants an instruction reads (its kernel arguments)."""
    return frozenset(int(m.group(1), 16) for m in re.finditer(r"c\[0x0\]\[(0x[0-9a-f]+)\]", text))


def _address(mc: _Machine, operand: str):
    """The 64-bit address of a memory operand (``desc[UR4][R12.64+0x10]``, ``[R2.64]``), or None."""
    m = re.match(r"^\s*(U?R\w+?)(\.64)?\s*(?:([+-])\s*(0x[0-9a-f]+))?\s*$", operand.split("[")[-1].rstrip("]"))
    if not m:
        return None
    v, _ = mc.val(m.group(1), pair=bool(m.group(2)))
    if v is None:
        return None
    off = int(m.group(4), 16) if m.group(4) else 0
    return v - off if m.group(3) == "-" else v + off


def _reg_names(s: str) -> set:
    out = set()
    for m in re.finditer(r"\b(U?R)(\d+)(\.64)?\b", s):
        out.add(f"{m.group(1)}{m.group(2)}")
        if m.group(3):
            out.add(f"{m.group(1)}{int(m.group(2)) + 1}")
    return out


@functools.lru_cache(maxsize=None)
def _regs_io_text(text: str) -> tuple[frozenset, frozenset]:
    ins = _decode(0, text)
    n_dest = _dest_regs(ins)
    if ins.name in _NO_DEST:
        dest_ops = []
    elif ins.name in _ALU_OPS or (ins.name.startswith("U") and ins.name[1:] in _ALU_OPS):
        dest_ops = [x for x in ins.args[:1] if not _is_pred(x)]
    else:
        dest_ops = _dests(ins)[0]
    dst = set()
    for d in dest_ops:
        m = _REG.match(d.replace(".reuse", ""))
        if m and m.group(2) != "Z":
            dst |= {f"{m.group(1)}{int(m.group(2)) + k}" for k in range(n_dest)}
    srcs = set()
    for k, s in enumerate(ins.args):
        if s in dest_ops and k == ins.args.index(s):
            continue
        srcs |= _reg_names(s)
    if ins.name in ("STG", "STS", "ST", "STSM") and ins.args:
        m = _REG.match(ins.args[-1].replace(".reuse", ""))
        if m and m.group(2) != "Z":
            srcs |= {f"{m.group(1)}{int(m.group(2)) + k}" for k in range(n_dest)}
    if "WIDE" in ins.mods and len(ins.args) >= 4:
        m = _REG.match(ins.args[3].replace(".reuse", ""))
        if m and m.group(2) != "Z":
            srcs.add(f"{m.group(1)}{int(m.group(2)) + 1}")
    return frozenset(dst), frozenset(srcs)


def _regs_io(ins: _Ins) -> tuple[frozenset, frozenset]:
    if ins.io is None:
        ins.io = _regs_io_text(ins.text.split(None, 1)[1] if ins.guard else ins.text)
    return ins.io
