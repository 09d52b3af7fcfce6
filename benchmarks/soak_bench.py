"""Soak: a long open-loop run at 70 % of the server's capacity, minute by minute.

The reference model (``mlscale train``: XGBoost on the wine data, in a throw-away
SQLite store) is served by ``mlscale serve`` pinned to core 0. ``mlscale loadtest``
pinned to core 1 first measures the capacity (closed loop, 32 users, no think
time), then sends 70 % of it on an open-loop schedule for ``--minutes``. Requests
carry ``--rows`` rows each so that capacity stays within what one Locust core can
send (about 5,000 requests/s).

Verdict: no failed request; the server's memory (median RSS of its process tree)
in the last minute within 5 % of the baseline minute's, the second (the first holds
the warm-up, in which the server grows to its working set; the first in runs of
under three minutes); the p99 latency of the last third of the run within 1.5
times the first third's, after the warm-up minute. Not a test: a slow or busy
machine changes the figures, so it prints them and says which checks held.

    .venv/bin/python benchmarks/soak_bench.py [--minutes 10] [--load 0.7] [--rows 100] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from mlscale.loadtest.histograms import Store, latency_ms, new_histogram
from mlscale.loadtest.runner import LoadTestSettings, run_loadtest
from mlscale.loadtest.shapes import constant
from mlscale.serving.process import ServeProcess

BENCH_DIR = Path(__file__).resolve().parent
MEMORY_GROWTH_LIMIT = 0.05
P99_DRIFT_LIMIT = 1.5
CAPACITY_USERS = 32
CAPACITY_SECONDS = 20.0


def train_model(workdir: Path) -> str:
    """The reference model, registered in a private SQLite store; its models:/ URI."""
    command = [sys.executable, "-m", "mlscale", "train", "--tracking-uri", f"sqlite:///{workdir}/mlflow.db"]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines or not lines[-1].startswith("models:/"):
        raise SystemExit(f"mlscale train failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return lines[-1].strip()


def pinned(core: int) -> tuple[int, ...] | None:
    return (core,) if (os.cpu_count() or 1) >= 2 else None


class MachineCpu:
    """Cores busy on the whole machine, once a second, in a thread: what the server and
    the generator did not use was used by someone else (the run's noise)."""

    def __init__(self) -> None:
        self.busy: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        psutil.cpu_percent()
        while not self._stop.wait(1.0):
            self.busy[int(time.time()) - 1] = psutil.cpu_percent() / 100 * (os.cpu_count() or 1)

    def __enter__(self) -> MachineCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def per_minute(out_dir: str, rows: list[dict], machine: dict[int, float]) -> list[dict]:
    """Requests, failures, exact latency percentiles, mean server RSS/CPU and the CPU
    other processes used, per minute."""
    with open(os.path.join(out_dir, "locust_results.json")) as handle:
        raw = json.load(handle)
    store = Store()
    store.add(raw["windows"])
    start = int(raw["start"])
    minutes: dict[int, dict] = {}
    for second, window in store.windows.items():
        minute = (second - start) // 60
        entry = minutes.setdefault(minute, {"histogram": new_histogram(), "failures": 0})
        for histogram in window.latency.values():
            entry["histogram"].add(histogram)
        entry["failures"] += sum(window.failures.values())
    table = []
    for minute in sorted(minutes):
        seconds = [r for r in rows if minute * 60 <= r["elapsed_s"] < (minute + 1) * 60]
        rss = [r["server_rss_mb"] for r in seconds if r["server_rss_mb"]]
        cpu = [r["server_cpu"] for r in seconds if r["server_cpu"] is not None]
        others = [
            machine[start + r["elapsed_s"]] - (r["server_cpu"] or 0) - (r["generator_cpu"] or 0)
            for r in seconds
            if start + r["elapsed_s"] in machine
        ]
        histogram = minutes[minute]["histogram"]
        table.append(
            {
                "minute": minute + 1,
                "seconds": len(seconds),
                "requests": histogram.get_total_count() + minutes[minute]["failures"],
                "rps": (histogram.get_total_count() + minutes[minute]["failures"]) / max(len(seconds), 1),
                "failures": minutes[minute]["failures"],
                **{k: v for k, v in latency_ms(histogram).items() if k in ("p50", "p95", "p99", "max")},
                "rss_mb": statistics.median(rss) if rss else None,
                "server_cpu": statistics.mean(cpu) if cpu else None,
                "other_cpu": max(statistics.mean(others), 0.0) if others else None,
                # The server's own view (its /metrics): requests in it, and their wait for the model.
                "in_flight": _mean(r["in_flight"] for r in seconds),
                "queue_wait_ms": _mean(r["queue_wait_ms"] for r in seconds),
                "histogram": histogram,  # for the verdict's windows; not written out
            }
        )
    return [m for m in table if m["seconds"] >= 50]  # whole minutes, not the drain's few seconds


def _mean(values) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.mean(present) if present else None


def _window_p99(minutes: list[dict]) -> float:
    merged = new_histogram()
    for minute in minutes:
        merged.add(minute["histogram"])
    return latency_ms(merged)["p99"]


def verdict(summary: dict, minutes: list[dict]) -> list[tuple[str, str, bool]]:
    first, last = minutes[1 if len(minutes) >= 3 else 0], minutes[-1]
    growth = (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"]
    # Latency steady: the p99 of the last third of the run against the first third's
    # (after the warm-up minute). One minute's p99 rests on a few hundred requests and
    # swings 2x between neighbouring minutes; a trend shows in the thirds.
    steady = minutes[1:] if len(minutes) >= 3 else minutes
    third = max(1, len(steady) // 3)
    early, late = steady[:third], steady[-third:]
    early_p99, late_p99 = _window_p99(early), _window_p99(late)
    drift = late_p99 / early_p99
    span = f"minutes {early[0]['minute']}-{early[-1]['minute']} vs {late[0]['minute']}-{late[-1]['minute']}"
    return [
        ("no failed request", f"{summary['failures']} of {summary['requests']}", summary["failures"] == 0),
        (
            f"memory growth <= {MEMORY_GROWTH_LIMIT:.0%} (minute {first['minute']} to the last, median RSS)",
            f"{first['rss_mb']:.1f} -> {last['rss_mb']:.1f} MB ({growth:+.1%})",
            growth <= MEMORY_GROWTH_LIMIT,
        ),
        (
            f"p99 steady: last third <= {P99_DRIFT_LIMIT}x the first ({span})",
            f"{early_p99:.2f} -> {late_p99:.2f} ms ({drift:.2f}x)",
            drift <= P99_DRIFT_LIMIT,
        ),
        (
            "the load generator kept its schedule (run valid)",
            "; ".join(summary["problems"]) or "valid",
            summary["valid"],
        ),
    ]


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render(report: dict) -> str:
    lines = [
        "## Soak",
        "",
        f"`{report['command']}` on {report['machine']}.",
        "",
        f"Capacity (closed loop, {CAPACITY_USERS} users, {report['rows']} rows a request): "
        f"{report['capacity_rps']:.0f} requests/s ({'valid' if report['capacity_valid'] else 'generator-bound: a lower bound'}). "
        f"Soak: {report['rate_rps']:.0f} requests/s ({report['load']:.0%}) for {report['minutes']:g} minutes, "
        f"{report['summary']['requests']:,} requests.",
        "",
        "| minute | requests/s | failed | p50 ms | p95 ms | p99 ms | max ms | in flight | queue wait ms "
        "| server RSS MB | server CPU | other processes' CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in report["per_minute"]:
        lines.append(
            f"| {m['minute']} | {m['rps']:.0f} | {m['failures']} | {m['p50']:.2f} | {m['p95']:.2f} | "
            f"{m['p99']:.2f} | {m['max']:.1f} | {_fmt(m['in_flight'], 1)} | {_fmt(m['queue_wait_ms'], 2)} | "
            f"{m['rss_mb']:.1f} | {m['server_cpu']:.2f} | {_fmt(m['other_cpu'], 2)} |"
        )
    lines += [
        "",
        "CPU in cores. Other processes' CPU is the machine's noise: on a 2-core machine, "
        "anything above about 0.2 takes time from the server or the generator.",
    ]
    lines += ["", "| check | measured | held |", "|---|---|:---:|"]
    lines += [f"| {name} | {value} | {'yes' if ok else 'NO'} |" for name, value, ok in report["verdict"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--load", type=float, default=0.7, help="share of the measured capacity")
    parser.add_argument("--rows", type=int, default=100, help="rows per request")
    parser.add_argument("--out", default=str(BENCH_DIR / "results"))
    args = parser.parse_args()
    command = "benchmarks/soak_bench.py " + " ".join(sys.argv[1:])

    with tempfile.TemporaryDirectory(prefix="mlscale-soak-") as tmp:
        work = Path(tmp)
        print("Training the reference model ...", flush=True)
        model_uri = train_model(work)
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}
        prefix = ["taskset", "-c", "0"] if pinned(0) else []
        # At the default log level: ServeProcess reads the port from uvicorn's start-up line.
        server = ServeProcess(["-m", model_uri], prefix=prefix, env=env, cwd=tmp)
        try:
            if not server.ready(120):
                raise SystemExit(f"the server did not start:\n{server.output[-3000:]}")
            common = {
                "host": server.url,
                "rows_per_request": args.rows,
                "cpu_affinity": pinned(1),
                "server_pid": server.pid,
            }
            print(f"Measuring capacity for {CAPACITY_SECONDS:g} s ...", flush=True)
            capacity = run_loadtest(
                LoadTestSettings(
                    shape=constant("users", CAPACITY_USERS, CAPACITY_SECONDS),
                    think_time_s=0.0,
                    spawn_rate=100,
                    out_dir=str(work / "capacity"),
                    report=False,
                    **common,
                )
            )
            capacity_rps = capacity.summary.rps
            rate = args.load * capacity_rps
            print(
                f"Capacity {capacity_rps:.0f} requests/s; soaking at {rate:.0f}/s for {args.minutes:g} min ...",
                flush=True,
            )
            soak_dir = str(work / "soak")
            with MachineCpu() as machine:
                soak = run_loadtest(
                    LoadTestSettings(
                        shape=constant("rps", rate, args.minutes * 60),
                        out_dir=soak_dir,
                        report=False,
                        **common,
                    )
                )
            minutes = per_minute(soak_dir, soak.rows, machine.busy)
            os.makedirs(args.out, exist_ok=True)
            shutil.copy(
                os.path.join(soak_dir, "timeseries.csv"), os.path.join(args.out, "soak_timeseries.csv")
            )
        finally:
            server.stop()
    if len(minutes) < 2:
        raise SystemExit("the soak ran less than two whole minutes: nothing to compare")
    report = {
        "command": command,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "rows": args.rows,
        "load": args.load,
        "minutes": args.minutes,
        "capacity_rps": capacity_rps,
        "capacity_valid": capacity.summary.valid,
        "rate_rps": rate,
        "summary": {
            k: soak.summary.to_json_dict()[k]
            for k in ("requests", "failures", "rps", "latency_ms", "valid", "problems")
        },
        "verdict": verdict(soak.summary.to_json_dict(), minutes),
        "per_minute": [{k: v for k, v in m.items() if k != "histogram"} for m in minutes],
    }
    os.makedirs(args.out, exist_ok=True)
    text = render(report)
    with open(os.path.join(args.out, "soak.md"), "w") as handle:
        handle.write(text)
    with open(os.path.join(args.out, "soak.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    print(text)
    return 0 if all(ok for _, _, ok in report["verdict"]) else 1


if __name__ == "__main__":
    sys.exit(main())
