"""The load generator's own ceiling: requests/s per generator core.

The no-model ceiling server (``ceiling_app.py``, uvicorn) runs pinned to core 0;
``mlscale loadtest`` (one Locust process) runs pinned to core 1, closed loop
with many users and no think time, then open loop at rising rates. Requests/s
per generator core = requests/s over the generator's mean CPU (cores) in the
steady seconds. Target: at least 5,000 per core.

    .venv/bin/python benchmarks/loadgen_bench.py [--duration 10] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
MLSCALE = os.path.join(os.path.dirname(sys.executable), "mlscale")
TARGET = 5000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_ceiling(port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "uvicorn", "ceiling_app:app", "--app-dir", HERE,
         "--port", str(port), "--no-access-log", "--log-level", "warning"],
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1)
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the ceiling server did not start")


def run(label: str, url: str, load: list[str], duration: float, workdir: str) -> dict:
    out = os.path.join(workdir, label.replace(" ", "-"))
    subprocess.run(
        ["taskset", "-c", "1", MLSCALE, "loadtest", "--host", url, *load,
         "--duration", str(duration), "--out", out],
        check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=duration + 120,
    )  # fmt: skip
    with open(os.path.join(out, "summary.json")) as handle:
        summary = json.load(handle)
    with open(os.path.join(out, "timeseries.csv")) as handle:
        rows = list(csv.DictReader(handle))
    # Steady seconds: skip the first two (users starting) and the drain at the end.
    steady = [r for r in rows[2:] if r["generator_cpu"] and float(r["rps"]) > 0][:-1] or rows
    rps = sum(float(r["rps"]) for r in steady) / len(steady)
    cpu = sum(float(r["generator_cpu"] or 0) for r in steady) / len(steady)
    return {
        "run": label,
        "rps": rps,
        "generator_cpu": cpu,
        "rps_per_core": rps / cpu if cpu else None,
        "p50_ms": summary["latency_ms"]["p50"],
        "p99_ms": summary["latency_ms"]["p99"],
        "valid": summary["valid"],
        "problems": summary["problems"],
    }


def table(results: list[dict]) -> str:
    lines = ["| run | requests/s | generator CPU (cores) | requests/s per core | p50 | p99 | valid |",
             "|---|---:|---:|---:|---:|---:|:---:|"]  # fmt: skip
    for r in results:
        per_core = f"{r['rps_per_core']:,.0f}" if r["rps_per_core"] else "–"
        lines.append(f"| {r['run']} | {r['rps']:,.0f} | {r['generator_cpu']:.2f} | {per_core} | "
                     f"{r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {'yes' if r['valid'] else 'no'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rates", default="2000,4000,6000")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs two cores: one for the server, one for the generator")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_ceiling(port)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="mlscale-loadgen-") as workdir:
            results.append(run("closed loop, 64 users", url,
                               ["--users", "64", "--think-time", "0", "--spawn-rate", "1000"],
                               args.duration, workdir))  # fmt: skip
            for rate in args.rates.split(","):
                results.append(run(f"open loop, {rate}/s", url, ["--rate", rate],
                                   args.duration, workdir))  # fmt: skip
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(10)
    report = table(results)
    best = max((r["rps_per_core"] or 0) for r in results if r["run"].startswith("closed"))
    verdict = f"Closed loop: {best:,.0f} requests/s per generator core (target {TARGET:,}): " + (
        "met" if best >= TARGET else "NOT met"
    )
    print(report + "\n\n" + verdict)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "loadgen.md"), "w") as handle:
        handle.write(report + "\n\n" + verdict + "\n")
    with open(os.path.join(args.out, "loadgen.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
