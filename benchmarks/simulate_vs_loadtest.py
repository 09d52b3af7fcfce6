"""Does the simulator's pod latency match a real load test of the same pod?

Takes a plan.json from ``mlscale plan`` and the model it measured, starts a
pod-sized ``mlscale serve`` of the plan's chosen size (pinned and CPU-limited as
plan does), and runs ``mlscale loadtest`` below saturation: at the loads that keep
the pod 30 %, 50 % and 70 % busy by the simulator's own model (loads the plan's
search did not measure). Each load is run ``--repeats`` times, the loads
interleaved, and the simulator's p95 for that pod and load is compared with the
median of the measured p95s; the spread between repeats is printed beside it,
because it is the floor under any model's error on this machine. Target: p95
within 20 %.

    .venv/bin/python benchmarks/simulate_vs_loadtest.py --plan plan-output/plan.json \\
        -m models:/wine-quality/1 [--busy 0.3,0.5,0.7] [--repeats 3] [--seconds 30]

The load generator runs on the cores the pod does not use (as in plan).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

from mlscale.capacity.pods import Pod, PodSpec, cores_for
from mlscale.loadtest.runner import LoadTestSettings, run_loadtest
from mlscale.loadtest.shapes import constant
from mlscale.simulate.service import load_at_busy, plan_kind, plan_think_time, pod_from_plan, pod_latency

TARGET = 0.20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", required=True)
    parser.add_argument("-m", "--model-uri", required=True)
    parser.add_argument("--busy", default="0.3,0.5,0.7", help="loads, as the share of the pod kept busy")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each load, interleaved")
    parser.add_argument("--seconds", type=float, default=30.0, help="each load test")
    args = parser.parse_args()

    with open(args.plan) as handle:
        plan = json.load(handle)
    sizing = plan["sizing"]
    spec = PodSpec(sizing["cpu_per_pod"], sizing["workers_per_pod"])
    kind, think = plan_kind(plan), plan_think_time(plan)
    model = pod_from_plan(plan)
    loads = [max(1, round(load_at_busy(model, kind, think, float(b)))) for b in args.busy.split(",")]
    generator = tuple(c for c in range(os.cpu_count() or 1) if c not in cores_for(spec))
    rows_per_request = plan["load_model"].get("rows_per_request", 1)
    print(f"pod {spec.label}: {model.source}\n"
          f"think time {think:g} s; {rows_per_request} row(s) per request; loads {loads} {kind}, "
          f"{args.repeats} x {args.seconds:g} s each")  # fmt: skip

    measured: dict[int, list[dict]] = {load: [] for load in loads}
    with Pod(args.model_uri, spec) as pod, tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for load in loads:
                summary = run_loadtest(LoadTestSettings(
                    host=pod.url, shape=constant(kind, load, args.seconds),
                    out_dir=os.path.join(scratch, f"{load}-{repeat}"), think_time_s=think, think="random",
                    spawn_rate=max(load, 10), cpu_affinity=generator or None, report=False,
                    rows_per_request=rows_per_request, mix=plan["load_model"].get("mix"),
                )).summary  # fmt: skip
                latency = summary["latency_ms"]
                measured[load].append(latency)
                print(f"  run {repeat + 1}, {load} {kind}: {summary['rps']:.0f} req/s, p50 {latency['p50']:.1f} ms, "
                      f"p95 {latency['p95']:.1f} ms{'' if summary['valid'] else '  (run INVALID)'}", flush=True)  # fmt: skip

    errors = []
    print(f"\n| load ({kind}) | busy | measured p95, median (runs) | simulated p95 | error | p50 measured / simulated |")
    print("|---|---|---|---|---|---|")
    for busy, load in zip(args.busy.split(","), loads):
        p95s = [m["p95"] for m in measured[load]]
        p50 = statistics.median(m["p50"] for m in measured[load])
        median = statistics.median(p95s)
        sim_p50, sim_p95 = pod_latency(plan, load)
        error = sim_p95 / median - 1
        errors.append(abs(error))
        runs = ", ".join(f"{p:.0f}" for p in p95s)
        print(f"| {load} | {float(busy):.0%} | {median:.1f} ms ({runs}) | {sim_p95:.1f} ms | {error:+.1%} | "
              f"{p50:.1f} / {sim_p50:.1f} ms |")  # fmt: skip
    worst = max(errors)
    print(f"worst p95 error {worst:.1%} (target: within {TARGET:.0%}): {'met' if worst <= TARGET else 'NOT met'}")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
