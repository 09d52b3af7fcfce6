"""How long ``mlscale simulate`` takes for a day at scale, end to end: 24 simulated
hours of a daily profile peaking at 100,000 requests/s, 1-second ticks, an HPA of
up to 2,000 pods (CPU 80 %) on a pool of up to 200 e2-standard-16 nodes with the
cluster autoscaler; then summary.json, timeseries.csv (every tick) and
report.html written, as the command writes them. Targets: under 3 s from the
start of the simulation to the last file written, on one core, and a report
under 2 MB.

Pin it to one core, as the other benchmarks do, and run it a few times on a
shared machine (take the fastest, give the spread):

    taskset -c 1 .venv/bin/python benchmarks/simulate_bench.py [--hours 24] [--out DIR]

It prints the simulation's time (the tick loop and the controllers), the time to
write the files (report.html included: without --out they go to a temporary
folder), their sizes, and what the day looked like. Exit status 1 if a target
is missed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from mlscale.simulate.engine import simulate
from mlscale.simulate.profile import daily_shape
from mlscale.simulate.queue import PodModel
from mlscale.simulate.results import summarize, write_outputs
from mlscale.simulate.settings import HpaSettings, NodePool, SimSettings

TARGET_S = 3.0  # end to end, for 24 simulated hours
TARGET_HTML_MB = 2.0


def scenario(hours: float):
    # A pod serving 64 requests/s at most (4 at once, 62.5 ms each): 100,000 requests/s
    # at 80 % CPU need about 1,950 pods, about 130 nodes of 15 pods.
    model = PodModel(servers=4, service_rate=16.0, cpu_cores=1.0, source="benchmark pod: M/M/4, 64 req/s")
    settings = SimSettings(
        pool=NodePool(machine_type="e2-standard-16", min_nodes=10, max_nodes=200),
        hpa=HpaSettings(metric="cpu", target=80, min_replicas=100, max_replicas=2000),
    )
    return settings, daily_shape(100_000, hours=hours), model


def _mb(path: str) -> float:
    return os.path.getsize(path) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Time 24 simulated hours of mlscale simulate at scale, end to end."
    )
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--out", default=None, help="keep the outputs here (default: a temporary folder)")
    args = parser.parse_args()
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    settings, shape, model = scenario(args.hours)
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or scratch
        started = time.perf_counter()
        run = simulate(settings, shape, model, name="benchmark")
        simulated = time.perf_counter() - started
        summary = summarize(run)
        write_outputs(out, run, summary, report=True)
        total = time.perf_counter() - started
        html_mb = _mb(os.path.join(out, "report.html"))
        data_mb = _mb(os.path.join(out, "timeseries.csv"))
    target = TARGET_S * args.hours / 24
    meets = total < target and html_mb < TARGET_HTML_MB
    print(f"cores: {affinity if affinity else 'unknown'} (pin with taskset -c 1)")
    print(
        f"{args.hours:g} simulated hours ({len(run.columns['time_s']):,} ticks): simulated in {simulated:.2f} s, "
        f"files written in {total - simulated:.2f} s, {total:.2f} s end to end "
        f"({'meets' if total < target else 'MISSES'} the {target:g} s target)"
    )
    print(
        f"report.html {html_mb:.2f} MB ({'meets' if html_mb < TARGET_HTML_MB else 'MISSES'} the "
        f"{TARGET_HTML_MB:g} MB target), timeseries.csv {data_mb:.2f} MB (every tick)"
        + (f", in {args.out}" if args.out else "")
    )
    print(
        f"pods ready at most {summary.max_pods_ready:,}, nodes at most {summary.max_nodes}, "
        f"Pending at most {summary.max_pods_pending}; {summary.node_hours:,.0f} node-hours, "
        f"{summary.cost:,.0f} USD; SLA missed for {summary.sla_violation_s:.0f} s; "
        f"{len(summary.events)} events"
    )
    return 0 if meets else 1


if __name__ == "__main__":
    sys.exit(main())
