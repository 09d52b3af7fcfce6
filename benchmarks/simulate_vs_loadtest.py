"""Does the simulator's pod latency match a real load test of the same pod?

Takes a plan.json from ``mlscale plan`` and the model it measured, starts a
pod-sized ``mlscale serve`` of the plan's chosen size (pinned and CPU-limited as
plan does), runs ``mlscale loadtest`` at loads the plan's search did not
measure (by default 30 %, 50 % and 70 % of the pod's capacity at the SLA,
below saturation), and compares each measured p50/p95 with what
``mlscale simulate``'s service model predicts for that pod and load. Target:
p95 within 20 %.

    .venv/bin/python benchmarks/simulate_vs_loadtest.py --plan plan-output/plan.json \
        -m models:/wine-quality/1 [--shares 0.3,0.5,0.7] [--seconds 30]

The load generator runs on the cores the pod does not use (as in plan).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from mlscale.capacity.pods import Pod, PodSpec, cores_for
from mlscale.loadtest.runner import LoadTestSettings, run_loadtest
from mlscale.loadtest.shapes import constant
from mlscale.simulate.service import plan_kind, plan_think_time, pod_latency

TARGET = 0.20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", required=True)
    parser.add_argument("-m", "--model-uri", required=True)
    parser.add_argument("--shares", default="0.3,0.5,0.7", help="loads, as shares of capacity")
    parser.add_argument("--seconds", type=float, default=30.0, help="each load test")
    args = parser.parse_args()

    with open(args.plan) as handle:
        plan = json.load(handle)
    sizing = plan["sizing"]
    spec = PodSpec(sizing["cpu_per_pod"], sizing["workers_per_pod"])
    kind, think = plan_kind(plan), plan_think_time(plan)
    capacity = sizing["capacity_per_pod"]
    generator = tuple(c for c in range(os.cpu_count() or 1) if c not in cores_for(spec))
    rows_per_request = plan["load_model"].get("rows_per_request", 1)
    print(f"pod {spec.label}: capacity {capacity:g} {kind} at {plan['sla']['expr']}; "
          f"think time {think:g} s; {rows_per_request} row(s) per request")  # fmt: skip

    results = []
    with Pod(args.model_uri, spec) as pod, tempfile.TemporaryDirectory() as scratch:
        for share in (float(s) for s in args.shares.split(",")):
            load = max(1, round(capacity * share))
            summary = run_loadtest(LoadTestSettings(
                host=pod.url, shape=constant(kind, load, args.seconds),
                out_dir=os.path.join(scratch, f"{share}"), think_time_s=think, think="random",
                spawn_rate=max(load, 10), cpu_affinity=generator or None, report=False,
                rows_per_request=rows_per_request, mix=plan["load_model"].get("mix"),
            )).summary  # fmt: skip
            p50, p95 = pod_latency(plan, load)
            measured = summary["latency_ms"]
            error = p95 / measured["p95"] - 1
            results.append(abs(error))
            print(f"  {load:>6g} {kind} ({share:.0%}): measured p50 {measured['p50']:.1f} ms, "
                  f"p95 {measured['p95']:.1f} ms; simulated p50 {p50:.1f} ms, p95 {p95:.1f} ms; "
                  f"p95 error {error:+.1%}{'' if summary['valid'] else '  (run INVALID)'}")  # fmt: skip
    worst = max(results)
    print(f"worst p95 error {worst:.1%} (target: within {TARGET:.0%}): "
          f"{'met' if worst <= TARGET else 'NOT met'}")  # fmt: skip
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
