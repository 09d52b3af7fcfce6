"""The load generator, measured: what it adds to latency, what it costs a core,
the users per core it can show, and the simulator at scale.

Four sections, each side by side in one run, the server pinned to core 0 and the
generator to core 1:

* **accuracy**: a server whose latency is known (``latency_app.py``: a uniform
  35-185 ms wait, whose draws it reports) under 50 users without think time
  and 1,000 users with 1 s of it; ``mlscale loadtest``, then ``wrk`` with as
  many connections and the same think time (``wrk_closed_loop.lua``), each
  beside the server's own truth for the same requests.
* **throughput**: the no-model ceiling server (``ceiling_app.py``) under 64
  users without think time and 10,000 users with 1 s of it, from ``mlscale
  loadtest`` and from plain Locust FastHttpUser users (``plain_locustfile.py``).
  Requests are counted at the server and the generator's CPU (every process it
  runs) over the same steady seconds: requests/s per generator core.
* **users-per-core**: ``mlscale plan -m models:/wine-quality/1 --target-users 120``
  with every other option at its default (1 CPU, one row per request, 1 s think
  time, p95 < 1 s) on the example model trained into a temporary store: the
  capacity it finds over the pod's CPU, and the model's hold-out error.
* **simulate**: ``simulate_bench.py``'s 24 simulated hours at 100,000 requests/s,
  on core 1.

    make bench-loadgen      # all four, about 12 minutes
    .venv/bin/python benchmarks/loadgen_bench.py [--sections accuracy,throughput] [--duration 20]

Writes ``loadgen.md`` and ``loadgen.json`` to ``--out`` (benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager

from serve_bench import _tree_cpu_s as tree_cpu_s  # CPU seconds of a process tree
from serve_bench import ensure_wrk

from mlscale.processes import free_port, signal_group, start_group, stop_group
from mlscale.schemas.plan import read_plan_file

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
MLSCALE = os.path.join(BIN, "mlscale")
SERVER_CORE, GENERATOR_CORE = "0", "1"
# Targets: within 2 ms of the true p50, within 3 % of the true p99 and
# p99.9; at least 5,000 requests/s per generator core with 10,000 users.
P50_WITHIN_MS, TAIL_WITHIN, PER_CORE_TARGET = 2.0, 0.03, 5000


def get(url: str, method: str = "GET") -> bytes:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


@contextmanager
def server(app: str, env: dict | None = None):
    """A uvicorn app from this folder on a free port, pinned to the server's core."""
    port = free_port()
    process = start_group(
        [
            "taskset",
            "-c",
            SERVER_CORE,
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--app-dir",
            HERE,
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--backlog",
            "16384",
            "--timeout-keep-alive",
            "30",
        ],
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                get(url + ("/count" if app.startswith("ceiling") else "/truth"))
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"{app} did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        stop_group(process, grace_s=10)


def mlscale_loadtest(url: str, users: int, think_s: float, duration: float, out: str) -> list[str]:
    return [
        "taskset",
        "-c",
        GENERATOR_CORE,
        MLSCALE,
        "loadtest",
        "--host",
        url,
        "--users",
        str(users),
        "--think-time",
        str(think_s),
        "--spawn-rate",
        "2500",
        "--duration",
        str(duration),
        "--out",
        out,
    ]


def plain_locust(url: str, users: int, think_s: float, duration: float) -> tuple[list[str], dict]:
    argv = [
        "taskset",
        "-c",
        GENERATOR_CORE,
        sys.executable,
        "-m",
        "locust",
        "-f",
        os.path.join(HERE, "plain_locustfile.py"),
        "--headless",
        "--only-summary",
        "--host",
        url,
        "-u",
        str(users),
        "-r",
        "2500",
        "-t",
        f"{duration:.0f}s",
        "--loglevel",
        "WARNING",
    ]
    return argv, {"PLAIN_THINK_S": str(think_s)}


# ---------------------------------------------------------------- accuracy


def accuracy_point(users: int, think_s: float, duration: float, workdir: str) -> dict:
    point = {"users": users, "think_s": think_s}
    with server("latency_app:app") as url:
        get(url + "/truth", "POST")
        out = os.path.join(workdir, f"accuracy-{users}")
        subprocess.run(
            mlscale_loadtest(url, users, think_s, duration, out),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=duration + 120,
        )
        with open(os.path.join(out, "summary.json")) as handle:
            latency = json.load(handle)["latency_ms"]
        point["mlscale"] = {k: latency[k] for k in ("p50", "p99", "p999")}
        point["truth_mlscale"] = json.loads(get(url + "/truth"))

        get(url + "/truth", "POST")
        wrk = subprocess.run(
            [
                "taskset",
                "-c",
                GENERATOR_CORE,
                "wrk",
                "-t1",
                f"-c{users}",
                f"-d{duration:.0f}s",
                "--timeout",
                "5s",
                "-s",
                os.path.join(HERE, "wrk_closed_loop.lua"),
                url + "/invocations",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=duration + 60,
            env={**os.environ, "WRK_THINK_MS": str(int(think_s * 1000))},
        )
        line = next(x for x in wrk.stdout.splitlines() if x.startswith("WRK_RESULT "))
        result = json.loads(line.split(" ", 1)[1])
        point["wrk"] = {k: result[f"{k}_us"] / 1000 for k in ("p50", "p99", "p999")}
        point["truth_wrk"] = json.loads(get(url + "/truth"))
    return point


def accuracy_table(points: list[dict]) -> tuple[str, bool]:
    lines = [
        "| users (think) | | p50 | p99 | p99.9 | p50 − truth | p99 / truth | p99.9 / truth |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    met = True
    for p in points:
        for name in ("mlscale", "wrk"):
            got, truth = p[name], p[f"truth_{name}"]
            d50 = got["p50"] - truth["p50"]
            r99, r999 = got["p99"] / truth["p99"], got["p999"] / truth["p999"]
            if name == "mlscale":
                met &= (
                    abs(d50) <= P50_WITHIN_MS and abs(r99 - 1) <= TAIL_WITHIN and abs(r999 - 1) <= TAIL_WITHIN
                )
            lines.append(
                f"| {p['users']:,} ({p['think_s']:g} s) | {name} | {got['p50']:.1f} | {got['p99']:.1f} | "
                f"{got['p999']:.1f} | {d50:+.1f} ms | {r99:.3f} | {r999:.3f} |"
            )
            lines.append(
                f"| | truth (server, same run) | {truth['p50']:.1f} | {truth['p99']:.1f} | {truth['p999']:.1f} | | | |"
            )
        d50 = p["mlscale"]["p50"] - p["wrk"]["p50"]
        lines.append(
            f"| | mlscale − wrk | {d50:+.1f} | {p['mlscale']['p99'] - p['wrk']['p99']:+.1f} | "
            f"{p['mlscale']['p999'] - p['wrk']['p999']:+.1f} | | | |"
        )
    return "\n".join(lines), met


# -------------------------------------------------------------- throughput


def throughput_point(
    label: str, argv: list[str], env: dict, url: str, settle_s: float, window_s: float
) -> dict:
    """Requests/s at the server and the generator's CPU over the same steady window."""
    process = start_group(
        argv,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(settle_s)
        count0, cpu0, t0 = int(get(url + "/count")), tree_cpu_s(process.pid), time.monotonic()
        time.sleep(window_s)
        count1, cpu1, t1 = int(get(url + "/count")), tree_cpu_s(process.pid), time.monotonic()
    finally:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            signal_group(process, signal.SIGKILL)
            process.wait()
    rps, cpu = (count1 - count0) / (t1 - t0), (cpu1 - cpu0) / (t1 - t0)
    return {"run": label, "rps": rps, "generator_cpu": cpu, "rps_per_core": rps / cpu if cpu else None}


def throughput_points(duration: float, workdir: str) -> list[dict]:
    points = []
    with server("ceiling_app:app") as url:
        for users, think in ((64, 0.0), (10_000, 1.0)):
            # 10,000 users take four seconds to spawn and one think time to spread out.
            settle = 3.0 if users < 1000 else 8.0
            window = max(duration - settle - 2, 5)
            total = settle + window + 2
            out = os.path.join(workdir, f"throughput-{users}")
            points.append(
                throughput_point(
                    f"mlscale, {users:,} users, think {think:g} s",
                    mlscale_loadtest(url, users, think, total, out),
                    {},
                    url,
                    settle,
                    window,
                )
            )
            argv, env = plain_locust(url, users, think, total)
            points.append(
                throughput_point(
                    f"Locust FastHttpUser, {users:,} users, think {think:g} s", argv, env, url, settle, window
                )
            )
    return points


def throughput_table(points: list[dict]) -> tuple[str, bool, list[str]]:
    lines = ["| run | requests/s | generator CPU (cores) | requests/s per core |", "|---|---:|---:|---:|"]
    for p in points:
        per_core = f"{p['rps_per_core']:,.0f}" if p["rps_per_core"] else "–"
        lines.append(f"| {p['run']} | {p['rps']:,.0f} | {p['generator_cpu']:.2f} | {per_core} |")
    ratios, met = [], True
    for mine, plain in zip(points[::2], points[1::2], strict=True):
        ratio = (mine["rps_per_core"] or 0) / (plain["rps_per_core"] or 1)
        ratios.append(f"{mine['run'].split(', ', 1)[1]}: {ratio:.2f}x plain Locust per core")
        if "10,000" in mine["run"]:
            met &= (mine["rps_per_core"] or 0) >= PER_CORE_TARGET
    return "\n".join(lines), met, ratios


# ----------------------------------------------------------- users per core


def users_per_core(workdir: str) -> dict:
    """The default plan of the example model, from a fresh store: its capacity per core."""
    store = f"sqlite:///{os.path.join(workdir, 'mlflow.db')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    subprocess.run([MLSCALE, "train"], check=True, env=env, cwd=workdir, capture_output=True, timeout=600)
    out = os.path.join(workdir, "plan")
    started = time.monotonic()
    subprocess.run(
        [MLSCALE, "plan", "-m", "models:/wine-quality/1", "--target-users", "120", "--out", out],
        check=True,
        env=env,
        cwd=workdir,
        capture_output=True,
        timeout=3600,
    )
    plan = read_plan_file(os.path.join(out, "plan.json"))
    (measured,) = plan.measurements
    at_limit = measured.at_limit
    return {
        "cpu": measured.cpu,
        "capacity_users": measured.max_load,
        "stopped_by": measured.stopped_by,
        "users_at_limit": at_limit.load if at_limit else None,
        "rps_at_limit": at_limit.rps if at_limit else None,
        "users_per_core": (measured.max_load or 0) / measured.cpu,
        "holdout_error": plan.model.holdout_error,
        "minutes": (time.monotonic() - started) / 60,
    }


def users_table(result: dict) -> str:
    error = result["holdout_error"]
    return (
        f"1-CPU pod, one row per request, 1 s think time, p95 < 1 s: capacity "
        f"**{result['capacity_users']:,.0f} users** (search {result['stopped_by']}; p95 crosses 1 s at "
        f"{result['users_at_limit'] or 0:,.0f} users, {result['rps_at_limit'] or 0:,.0f} requests/s): "
        f"**{result['users_per_core']:,.0f} users per core** (the reference, with `mlflow models "
        f"serve`: about 10). Model hold-out error "
        f"{'–' if error is None else f'{error * 100:.1f} %'}; the plan took {result['minutes']:.1f} min."
    )


def simulation() -> str:
    run = subprocess.run(
        ["taskset", "-c", GENERATOR_CORE, sys.executable, os.path.join(HERE, "simulate_bench.py")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return run.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default="accuracy,throughput,users-per-core,simulate")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per run")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs two cores: one for the server, one for the generator")
    if "accuracy" in sections:
        ensure_wrk()  # beside mlscale at the same point; installed from Debian when missing
    report, results = [], {}
    with tempfile.TemporaryDirectory(prefix="mlscale-loadgen-") as workdir:
        if "accuracy" in sections:
            points = [
                accuracy_point(50, 0.0, args.duration, workdir),
                accuracy_point(1000, 1.0, args.duration, workdir),
            ]
            table, met = accuracy_table(points)
            verdict = (
                f"Accuracy (target: p50 within {P50_WITHIN_MS:g} ms, p99 and p99.9 within "
                f"{TAIL_WITHIN:.0%} of the truth): {'met' if met else 'NOT met'}"
            )
            report += ["## Latency the generator adds (ms)", table, verdict]
            results["accuracy"] = points
        if "throughput" in sections:
            points = throughput_points(args.duration, workdir)
            table, met, ratios = throughput_table(points)
            verdict = (
                f"Throughput (target: {PER_CORE_TARGET:,} requests/s per generator core at "
                f"10,000 users): {'met' if met else 'NOT met'}; " + "; ".join(ratios)
            )
            report += ["## Requests per generator core", table, verdict]
            results["throughput"] = points
        if "users-per-core" in sections:
            results["users_per_core"] = users_per_core(workdir)
            report += ["## Users per core (`mlscale plan`, defaults)", users_table(results["users_per_core"])]
        if "simulate" in sections:
            results["simulate"] = simulation()
            report += ["## The simulator at scale (24 h, 100,000 requests/s)", results["simulate"]]
    text = "\n\n".join(report)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "loadgen.md"), "w") as handle:
        handle.write(text + "\n")
    with open(os.path.join(args.out, "loadgen.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
