"""The device table of the static performance model (``perf/static_model.py``): every constant with its source.

Two numbers only a GPU can give are the model's free parameters (:data:`FREE_PARAMETERS`): the
sustained issue efficiency (the fraction of the 4 warp-instructions per clock per SM a real kernel
issues: dependency stalls, scheduler conflicts, clock throttling) and the DRAM latency under load
(what Little's law multiplies the bandwidth by). Their defaults are estimates;
``python perf/static_model.py --calibrate RESULTS.jsonl`` fits them to the device check's rows.
"""

from __future__ import annotations

# Sources:
#   [WP]  NVIDIA H100 Tensor Core GPU datasheet / Hopper architecture whitepaper: H100 SXM5 132 SMs,
#         FP32 66.9 TFLOP/s = 132 SMs x 128 lanes x 2 FLOP x 1.98 GHz (the boost clock the non-tensor
#         peaks are quoted at), dense BF16 tensor 989.4 TFLOP/s = 132 x 4096 FLOP/clk x 1.83 GHz
#         (tensor peaks are quoted at 1.83 GHz; summary in G. Lockwood's H100 notes,
#         glennklockwood.com/garden/processors/h100: "1.83 GHz (low precision), 1.98 GHz (high
#         precision)"); HBM3 3.35 TB/s; 4 warp schedulers per SM, each issuing one warp-instruction
#         per clock; 256 KB of registers and up to 228 KB of shared memory per SM.
#   [H200] NVIDIA H200 datasheet: the same GH100 (132 SMs, same clocks) with 141 GB HBM3e at 4.8 TB/s.
#   [PG]  CUDA C++ Programming Guide, "Arithmetic Instructions" throughput table, compute capability
#         9.0 (results per clock per SM): FP32 add/multiply/multiply-add 128; 32-bit integer add,
#         compare, min/max, shift, logic 64; 32-bit integer multiply(-add) 64; type conversions 16;
#         special functions (MUFU: exp2, rcp, ...) 16; warp shuffle 32. And "Technical
#         Specifications": 64 K registers, 64 warps, 32 blocks per SM; shared memory per SM 228 KB
#         (sm_90), 164 KB (sm_80).
#   [NCU] Nsight Compute Kernel Profiling Guide, "Pipelines": IMAD/IMUL run on the FMA pipe's heavy
#         half (fmaheavy), FP32 on both halves; conversions and MUFU on xu; loads, stores, shuffles
#         and S2R on lsu.
#   [CG]  NVIDIA technical blog "Getting Started with CUDA Graphs" (A. Gray, 2019): kernels of
#         2.9 µs launched back to back in one stream without host syncs take 3.8 µs each (V100):
#         about 1 µs between consecutive kernels on the GPU once the host runs ahead.
#   [EST] estimates, not measured: copy bandwidth as 90 % of the HBM peak until the device check
#         measures it (perf/bench_neuron.py reports the measured one); 4-6 µs per launch from Python
#         (Triton's launcher; perf/README.md, step_budget).

DEVICES = {
    "H100": dict(sms=132, clock_ghz=1.98, tensor_clock_ghz=1.83, hbm_tbps=3.35, copy_fraction=0.90, arch=90),
    "H200": dict(sms=132, clock_ghz=1.98, tensor_clock_ghz=1.83, hbm_tbps=4.80, copy_fraction=0.90, arch=90),
}
DEVICE_SOURCES = {
    "sms": "[WP] [H200]", "clock_ghz": "[WP] boost clock of the FP32 peak", "tensor_clock_ghz": "[WP]",
    "hbm_tbps": "[WP] [H200]", "copy_fraction": "[EST]", "arch": "sm_90",
}

# Issue: 4 schedulers x 1 warp-instruction per clock per SM [WP], in lane-instructions.
ISSUE_LANES_PER_SM_CLOCK = 4 * 32
# Pipe throughput, lane-instructions per clock per SM [PG], pipe names and membership [NCU]
# (perf.sass.PIPE_OF). "fma" counts every FP32 and integer multiply-add instruction (both halves
# together issue 128 lanes per clock); "fmaheavy" only the integer multiply-adds (64). The tensor
# pipe: one m16n8k16 mma (4096 FLOP) per clock per SM, the dense BF16 peak at the tensor clock [WP].
PIPE_LANES_PER_SM_CLOCK = {"fma": 128, "fmaheavy": 64, "alu": 64, "xu": 16, "lsu": 32, "tensor": 32}

# per SM: registers, warps, blocks, shared memory bytes [PG]
SM_LIMITS = {90: dict(regs=65536, warps=64, blocks=32, smem=233472),
             80: dict(regs=65536, warps=64, blocks=32, smem=167936)}

# Launch overhead per kernel: on the GPU between consecutive kernels of a busy stream [CG]; and the
# host's cost of one launch from Python [EST], which a training step hides as long as its kernels
# take longer on average (the step's total is reported beside the table, not added to each launch).
LAUNCH_GAP_US = 1.0
HOST_LAUNCH_US = 5.0

# The free parameters and their defaults: issue efficiency 0.8 (the issue's default; fitted by
# --calibrate), DRAM latency under load 0.7 µs (estimate: Little's law for an H200 at 90 % of its
# bandwidth needs 13-17 KB in flight per SM at 0.6-0.8 µs; fitted by --calibrate). The latency
# applies to every global-load round trip, including loads that hit L2 (an upper bound for those).
FREE_PARAMETERS = {"issue_efficiency": 0.8, "dram_latency_us": 0.7}


def copy_bandwidth(device: str) -> float:
    """Bytes per second a copy kernel moves on ``device`` (the 100 % of "% of copy bandwidth")."""
    d = DEVICES[device]
    return d["hbm_tbps"] * 1e12 * d["copy_fraction"]
