"""Does the server's memory come back down after a peak of large batches?

Serves the example model (``mlscale train`` into a throw-away SQLite store) with
``mlscale serve`` pinned to core 0, twice: with glibc's default malloc settings
(``MLSCALE_MMAP_THRESHOLD=0``) and with mlscale's fixed mmap threshold (see
``mlscale/serving/memory.py``). Each time: steady load of 100-row requests from
one client pinned to core 1, then ``--peaks`` rounds of a peak (16 concurrent
20,000-row requests, five times) followed by steady load again, reading the
server's resident memory (its process tree) after each.

    .venv/bin/python benchmarks/memory_peak_bench.py [--peaks 3] [--steady-s 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak_bench import pinned, train_model

from mlscale.examples.wine import feature_frame
from mlscale.serving.memory import THRESHOLD_ENV
from mlscale.serving.process import ServeProcess


def body(frame: pd.DataFrame, rows: int) -> bytes:
    rows_frame = pd.concat([frame] * (rows // len(frame) + 1)).iloc[:rows]
    return json.dumps(
        {"dataframe_split": {"columns": list(rows_frame.columns), "data": rows_frame.values.tolist()}}
    ).encode()


def run(model_uri: str, threshold: str, peaks: int, steady_s: float) -> list[float]:
    """Resident MB: after warm-up, then after each peak and the steady load after it."""
    frame = feature_frame()
    small, big = body(frame, 100), body(frame, 20_000)
    core = pinned(0)
    server = ServeProcess(
        ["-m", model_uri], prefix=["taskset", "-c", "0"] if core else [], env={THRESHOLD_ENV: threshold}
    )
    try:
        if not server.ready(180):
            raise SystemExit(f"the server did not start:\n{server.output[-3000:]}")
        process = psutil.Process(server.pid)

        def rss() -> float:
            return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20

        url, headers = f"{server.url}/invocations", {"Content-Type": "application/json"}

        def steady() -> None:
            with httpx.Client(timeout=30) as client:
                end = time.monotonic() + steady_s
                while time.monotonic() < end:
                    client.post(url, content=small, headers=headers).raise_for_status()

        def peak() -> None:
            for _ in range(5):
                threads = [
                    threading.Thread(
                        target=lambda: httpx.post(url, content=big, headers=headers, timeout=120)
                    )
                    for _ in range(16)
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()

        steady()
        readings = [rss()]
        for _ in range(peaks):
            peak()
            steady()
            readings.append(rss())
        return readings
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peaks", type=int, default=3)
    parser.add_argument("--steady-s", type=float, default=10.0)
    args = parser.parse_args()
    if pinned(1):
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as work:
        model_uri = train_model(Path(work))
        results = {
            name: run(model_uri, threshold, args.peaks, args.steady_s)
            for name, threshold in (("glibc default", "0"), ("mlscale (fixed threshold)", str(128 * 1024)))
        }
    print(
        "| malloc | before | " + " | ".join(f"after peak {i + 1}" for i in range(args.peaks)) + " | growth |"
    )
    print("|---|---:|" + "---:|" * args.peaks + "---:|")
    for name, readings in results.items():
        growth = readings[-1] / readings[0] - 1
        print(
            f"| {name} | {readings[0]:.1f} MB | "
            + " | ".join(f"{r:.1f}" for r in readings[1:])
            + f" | {growth:+.1%} |"
        )
    default, fixed = (results[k][-1] - results[k][0] for k in results)
    print(
        f"growth after {args.peaks} peak(s): {default:.1f} MB with glibc's default, {fixed:.1f} MB fixed "
        f"({default / max(fixed, 0.1):.1f}x less)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
