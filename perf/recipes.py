"""The static model at the recipes' shapes, and its calibration against measured rows.

**Shape table** (``python perf/static_model.py --recipes``): every neuron op of one training step of
each recipe (:data:`perf.launches.RECIPES`; shapes from the networks, :func:`perf.launches.recipe_ops`)
with its predicted time, bound and % of copy bandwidth on H100 and H200, and per recipe the step's
total elementwise time (the sum of its ops) with the host's launch cost beside it. A row: ``recipe``
(the config file, and any override), ``launch`` (module and op), ``T``, ``N`` (elements per step),
``kernels``, ``issued_instructions_per_element_step`` (every kernel of the op: lane-instructions over
T·N), ``bound`` (H200) and ``bound_h100``, ``predicted_ms_h100`` / ``_h200``,
``predicted_pct_of_copy_bw_h100`` / ``_h200``, ``slowest_kernel`` and its bound on H200, and
``assumed_branches`` (data-dependent branches of its per-element kernels taken as not taken: none).

**Calibration** (``python perf/static_model.py --calibrate RESULTS.jsonl``): the two free parameters
(:data:`perf.devices.FREE_PARAMETERS`) fitted by least squares on ``log(predicted / measured)``
over a grid (issue efficiency 0.30-1.00 by 0.01, DRAM latency 0.15-3.0 µs on a log grid), refined
around the best point. A row is one JSON object per line with ``device`` (a name containing H100 or
H200), ``ms`` (measured) and the op, either as the benchmarks write it:

* ``perf/bench_neuron.py`` (``bench: "neuron"``, ``path: "fused"``): the fused LIF (sigmoid, hard
  reset, layer width) with ``T``, ``N``, ``dtype``, ``p``, ``pass`` (``fwd``, ``bwd``, ``fwd+bwd``);
* ``perf/bench_bn_lif.py`` (``bench: "bn_lif"``, ``path: "fused"``): the fused batch norm + LIF
  without shortcut, ``shape`` ``[T, B, C, H, W]``, ``dtype``, ``p``, ``pass``, ``channels_last``;

other rows are skipped. Each device gets its own fit. A parameter the rows do not constrain (every
row memory bound: the efficiency is then any value above the one where issue would bind) is reported
as such with the range it could take.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from perf.devices import DEVICES, FREE_PARAMETERS, HOST_LAUNCH_US
from perf.launches import RECIPES, bn_lif_op, lif_op, recipe_ops
from perf.static_model import compile_specs, kernel_cost, predict_kernel, predict_op

# the acceptance of the shape table: every neuron / BN+LIF op of these recipes at batch 256, issue
# efficiency 0.8, on both devices, at or above this % of copy bandwidth
CHECKED_RECIPES = ("cifar10_resnet18_t4.yaml", "cifar100_resnet18_t2.yaml", "cifar100_resnet18_t4.yaml",
                   "tinyimagenet_vgg13_t4.yaml", "tinyimagenet_vgg13_t8.yaml")
MIN_PCT_OF_COPY = 85.0


def recipe_rows(recipes=RECIPES, batch: int | None = None, params: dict | None = None, jobs: int = 2) -> list[dict]:
    """One row per neuron op of each recipe's training step (module docstring)."""
    ops = [op for config, overrides in recipes for op in recipe_ops(config, overrides, batch)]
    compile_specs([k.spec for op in ops for k in op.kernels], jobs=jobs)
    rows = []
    for op in ops:
        costs = [kernel_cost(k) for k in op.kernels]
        lane_instructions = sum(c.programs * c.warps * 32 * c.instructions for c in costs)
        slowest = max(costs, key=lambda c: predict_kernel(c, "H200", params)["seconds"])
        row = dict(recipe=op.recipe, launch=op.launch, T=op.T, N=op.N, kernels=len(costs),
                   issued_instructions_per_element_step=round(lane_instructions / (op.T * op.N), 2),
                   slowest_kernel=slowest.label, slowest_kernel_bound=predict_kernel(slowest, "H200", params)["bound"],
                   assumed_branches=sum(c.assumed for c in costs if c.kind == "elementwise"))
        for dev in DEVICES:
            pred = predict_op(costs, dev, params)
            tag = dev.lower()
            row[f"bound_{tag}"] = pred["bound"]
            row[f"predicted_ms_{tag}"] = round(pred["ms"], 4)
            row[f"predicted_pct_of_copy_bw_{tag}"] = round(pred["pct_of_copy_bw"], 1)
        row["bound"] = row["bound_h200"]
        rows.append(row)
    return rows


def step_totals(rows: list[dict]) -> dict:
    """recipe -> {"ops", "kernels", "ms_h100", "ms_h200", "host_ms"}: the step's elementwise time."""
    out: dict = {}
    for r in rows:
        t = out.setdefault(r["recipe"], dict(ops=0, kernels=0, **{f"ms_{d.lower()}": 0.0 for d in DEVICES}))
        t["ops"] += 1
        t["kernels"] += r["kernels"]
        for d in DEVICES:
            t[f"ms_{d.lower()}"] += r[f"predicted_ms_{d.lower()}"]
    for t in out.values():
        t["host_ms"] = t["kernels"] * HOST_LAUNCH_US / 1e3
    return out


def markdown(rows: list[dict]) -> str:
    """The shape table for perf/RESULTS.md."""
    lines = ["| recipe | launch | T | N | bound (H100 / H200) | H100 ms | H100 % copy | H200 ms | H200 % copy |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['launch']} | {r['T']} | {r['N']:,} | {r['bound_h100']} / "
                     f"{r['bound_h200']} | {r['predicted_ms_h100']:.4f} | {r['predicted_pct_of_copy_bw_h100']:.1f} | "
                     f"{r['predicted_ms_h200']:.4f} | {r['predicted_pct_of_copy_bw_h200']:.1f} |")
    lines += ["", "| recipe | neuron ops | kernels | elementwise ms per step, H100 | H200 | host launch cost, ms |",
              "|---|---|---|---|---|---|"]
    for recipe, t in step_totals(rows).items():
        lines.append(f"| {recipe} | {t['ops']} | {t['kernels']} | {t['ms_h100']:.3f} | {t['ms_h200']:.3f} | "
                     f"{t['host_ms']:.2f} |")
    return "\n".join(lines)


def recipes_main(json_path: Path | None, batch: int | None, params: dict, jobs: int,
                 markdown_path: Path | None = None) -> int:
    from perf.common import print_table

    rows = recipe_rows(batch=batch, params=params, jobs=jobs)
    print_table(f"predicted: every neuron op of one training step (batch {batch or 'of each config'}; issue "
                f"efficiency {params['issue_efficiency']:g}, DRAM latency {params['dram_latency_us']:g} µs)",
                ("recipe", "launch", "T", "N", "bound H100/H200", "H100 ms", "H100 %copy", "H200 ms", "H200 %copy"),
                [(r["recipe"], r["launch"], r["T"], r["N"], f"{r['bound_h100']}/{r['bound_h200']}",
                  r["predicted_ms_h100"], r["predicted_pct_of_copy_bw_h100"], r["predicted_ms_h200"],
                  r["predicted_pct_of_copy_bw_h200"]) for r in rows])
    print_table("predicted elementwise time of one step (the host's launch cost is hidden while the GPU is busy)",
                ("recipe", "ops", "kernels", "H100 ms", "H200 ms", "host launch ms"),
                [(k, t["ops"], t["kernels"], t["ms_h100"], t["ms_h200"], t["host_ms"])
                 for k, t in step_totals(rows).items()])
    for path, text in ((json_path, json.dumps(rows, indent=1)), (markdown_path, markdown(rows))):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text + "\n")
            print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------


def row_launches(row: dict) -> list | None:
    """The kernel launches of a measured row (module docstring), or None for a row that is not one."""
    if row.get("path") != "fused" or "ms" not in row or not row.get("ms"):
        return None
    passes = str(row.get("pass", "")).split("+")
    if not passes or not set(passes) <= {"fwd", "bwd"}:
        return None
    if row.get("bench") == "neuron":
        return [k for pas in passes for k in lif_op(pas, (int(row["T"]), int(row["N"])), dtype=row["dtype"],
                                                     p=float(row.get("p", 0.0)))]
    if row.get("bench") == "bn_lif":
        return [k for pas in passes for k in bn_lif_op(pas, tuple(row["shape"]), dtype=row["dtype"],
                                                        p=float(row.get("p", 0.0)),
                                                        channels_last=bool(row.get("channels_last")))]
    return None


def _loss(samples, params) -> float:
    return sum(math.log(predict_op(costs, dev, params)["ms"] / ms) ** 2 for costs, dev, ms in samples)


def fit(samples: list, efficiencies=None, latencies=None) -> dict:
    """Least-squares fit of the free parameters to ``samples`` = ``[(kernel costs, device, measured
    ms)]``: ``{"params", "rms_log_error", "constrained": {name: bool}, "range": {name: (lo, hi)}}``.
    ``range``: the grid values whose loss is within 1 % of the best; a parameter is constrained when
    that range stops short of both ends of its grid (memory-bound rows alone only bound the
    efficiency from below and the latency from above)."""
    efficiencies = efficiencies or [round(0.30 + 0.01 * i, 2) for i in range(71)]
    latencies = latencies or [round(0.15 * (3.0 / 0.15) ** (i / 60), 4) for i in range(61)]
    grid = {(e, lat): _loss(samples, dict(issue_efficiency=e, dram_latency_us=lat))
            for e in efficiencies for lat in latencies}
    (e0, l0), best = min(grid.items(), key=lambda kv: kv[1])
    # refine: a 21 x 21 grid over the neighbouring cells
    ei, li = efficiencies.index(e0), latencies.index(l0)
    e_lo, e_hi = efficiencies[max(ei - 1, 0)], efficiencies[min(ei + 1, len(efficiencies) - 1)]
    l_lo, l_hi = latencies[max(li - 1, 0)], latencies[min(li + 1, len(latencies) - 1)]
    for i in range(21):
        for j in range(21):
            e = e_lo + (e_hi - e_lo) * i / 20
            lat = l_lo + (l_hi - l_lo) * j / 20
            loss = _loss(samples, dict(issue_efficiency=e, dram_latency_us=lat))
            if loss < best:
                (e0, l0), best = (e, lat), loss
    grid_best = min(grid.values())
    near = [k for k, v in grid.items() if v <= grid_best * 1.01 + 1e-12]
    ranges = {"issue_efficiency": (min(k[0] for k in near), max(k[0] for k in near)),
              "dram_latency_us": (min(k[1] for k in near), max(k[1] for k in near))}
    constrained = {"issue_efficiency": efficiencies[0] < ranges["issue_efficiency"][0]
                   and ranges["issue_efficiency"][1] < efficiencies[-1],
                   "dram_latency_us": latencies[0] < ranges["dram_latency_us"][0]
                   and ranges["dram_latency_us"][1] < latencies[-1]}
    return dict(params=dict(issue_efficiency=round(e0, 3), dram_latency_us=round(l0, 3)),
                rms_log_error=math.sqrt(best / max(len(samples), 1)), constrained=constrained, range=ranges)


def read_samples(path: Path, jobs: int = 2) -> dict:
    """device -> [(kernel costs, device, measured ms)] from the rows of ``path`` (module docstring)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    picked = []
    for r in rows:
        device = next((d for d in DEVICES if d in str(r.get("device", ""))), None)
        launches = row_launches(r) if device else None
        if launches:
            picked.append((r, device, launches))
    compile_specs([k.spec for _, _, ks in picked for k in ks], jobs=jobs)
    out: dict = {}
    for r, device, launches in picked:
        out.setdefault(device, []).append(([kernel_cost(k) for k in launches], device, float(r["ms"])))
    return out


def calibrate_main(path: Path, jobs: int) -> int:
    if not path.is_file():
        print(f"--calibrate: no file {path}")
        return 2
    samples = read_samples(path, jobs)
    if not samples:
        print(f"--calibrate: no usable row in {path} (fused rows of perf/bench_neuron.py or perf/bench_bn_lif.py "
              f"measured on an H100 or H200)")
        return 1
    for device, rows in samples.items():
        result = fit(rows)
        before = math.sqrt(_loss(rows, FREE_PARAMETERS) / len(rows))
        print(f"{device}: {len(rows)} rows; fitted {result['params']} (rms log error {result['rms_log_error']:.3f}, "
              f"{before:.3f} at the defaults {FREE_PARAMETERS})")
        for name, ok in result["constrained"].items():
            lo, hi = result["range"][name]
            if not ok:
                print(f"  {name}: not constrained by these rows (any value in {lo:g}..{hi:g} fits within 1 %)")
        for costs, dev, ms in rows:
            pred = predict_op(costs, dev, result["params"])
            print(f"  measured {ms:.4f} ms, predicted {pred['ms']:.4f} ms ({pred['bound']}): "
                  f"{' + '.join(c.label.split(' sm_')[0] for c in costs)}")
    return 0
