"""The server in a container against the same server on the host, and CPU limits.

One run, on the reference model, with ``wrk`` pinned to core 1 and the server
always on core 0:

* ``host``        - ``mlscale serve`` on the host, ``taskset -c 0``;
* ``cpus=1``      - the server image, ``--cpuset-cpus 0 --cpus 1``;
* ``cpus=0.5``    - the server image, ``--cpuset-cpus 0 --cpus 0.5``.

The three run in turn, ``--rounds`` times (interleaved, so drift on a shared
machine falls on all of them alike), and the best run of each is kept. The
ratios answer two questions: does a container cost anything (target: at
``--cpus 1`` within 10 % of the host), and is the limit honoured (``--cpus
0.5`` about half of ``--cpus 1``).

Usage::

    .venv/bin/python benchmarks/container_limits_bench.py [--duration 10] [--rounds 2]

Needs the server image (``make images``), podman or docker, 2 cores, taskset
and wrk (installed with apt-get when missing).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_bench import (
    SERVER_CORE,
    VENV_BIN,
    BenchError,
    WrkResult,
    ensure_cores,
    ensure_wrk,
    free_port,
    parse_wrk,
    request_bodies,
    run_wrk,
    train_model,
    write_lua,
)

from mlscale import __version__
from mlscale.containers.engine import find_engine


@dataclass(frozen=True)
class Setup:
    name: str
    cpus: float | None  # None: on the host
    #: The container shares the host's network namespace: no veth, no NAT, so
    #: what is left is the image and the CPU limit alone.
    host_network: bool = False


SETUPS = (
    Setup("host", None),
    Setup("cpus=1", 1.0),
    Setup("cpus=1 net=host", 1.0, host_network=True),
    Setup("cpus=0.5", 0.5),
)
WORKLOADS = (("one", 1, 16), ("batch", 1000, 4))  # name, rows per request, connections


def wait_ready(port: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError(f"the server on port {port} was not ready in {timeout_s:.0f} s")


def start(setup: Setup, model_uri: str, store: Path, tracking_uri: str, image: str):
    """Start one setup; returns (port, stop function)."""
    port = free_port()
    if setup.cpus is None:
        process = subprocess.Popen(
            [
                "taskset",
                "-c",
                SERVER_CORE,
                str(VENV_BIN / "mlscale"),
                "serve",
                "-m",
                model_uri,
                "-p",
                str(port),
            ],
            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def stop() -> None:
            process.terminate()
            process.wait(30)

        return port, stop
    engine = find_engine()
    name = f"mlscale-bench-{port}"
    if setup.host_network:  # the server's own flags pick the port and the address
        network = ["--network", "host", "--entrypoint", "mlscale"]
        server = ["serve", "-h", "127.0.0.1", "-p", str(port)]
    else:
        network, server = ["-p", f"127.0.0.1:{port}:8080"], []
    engine.run(
        "run",
        "-d",
        "--rm",
        "--name",
        name,
        "--cpuset-cpus",
        SERVER_CORE,
        "--cpus",
        str(setup.cpus),
        "--read-only",
        "--tmpfs",
        "/tmp",
        *network,
        "-v",
        f"{store}:{store}",
        "-e",
        f"MLFLOW_TRACKING_URI={tracking_uri}",
        image,
        *server,
        "-m",
        model_uri,
    )
    return port, lambda: engine.run("rm", "-f", "-t", "5", name, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repeats of each setup")
    parser.add_argument("--image", default=f"mlscale/server:{__version__}")
    args = parser.parse_args()
    ensure_cores()
    ensure_wrk()
    best: dict[tuple[str, str], WrkResult] = {}
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder)
        model_uri = train_model(store)
        # The container's user (uid 10001) reads and locks the SQLite store.
        subprocess.run(["chmod", "-R", "a+rwX", str(store)], check=True)
        tracking_uri = f"sqlite:///{store}/mlflow.db"
        bodies = request_bodies()
        scripts = {name: write_lua(store, name, bodies[name]) for name, _, _ in WORKLOADS}
        for round_ in range(args.rounds):
            for setup in SETUPS:
                port, stop = start(setup, model_uri, store, tracking_uri, args.image)
                try:
                    wait_ready(port)
                    for name, rows, connections in WORKLOADS:
                        run_wrk(port, scripts[name], connections, 2, latency=False)  # warm-up
                        out = run_wrk(port, scripts[name], connections, args.duration)
                        result = parse_wrk(
                            out,
                            WrkResult(setup.name, name, connections, args.duration, rows_per_request=rows),
                        )
                        if not result.valid:
                            raise BenchError(f"{setup.name} {name}: failed requests\n{out}")
                        print(
                            f"round {round_ + 1} {setup.name:>8} {name:>5}: "
                            f"{result.requests_per_s:8.1f} req/s, p50 {result.p50_ms:.2f} ms, "
                            f"p99 {result.p99_ms:.2f} ms",
                            flush=True,
                        )
                        key = (setup.name, name)
                        if key not in best or result.requests_per_s > best[key].requests_per_s:
                            best[key] = result
                finally:
                    stop()
    print(
        "\n| workload | host, core 0 | --cpus 1, -p (ratio to host) | --cpus 1, --network host "
        "(ratio) | --cpus 0.5, -p (ratio to --cpus 1) |"
    )
    print("|---|---|---|---|---|")
    for name, rows, connections in WORKLOADS:
        host, one, one_host_net, half = (best[(s.name, name)].requests_per_s for s in SETUPS)
        label = f"{rows} row{'s' if rows > 1 else ''}/request, {connections} connections"
        print(
            f"| {label} | {host:.0f} req/s | {one:.0f} ({one / host:.2f}) | "
            f"{one_host_net:.0f} ({one_host_net / host:.2f}) | {half:.0f} ({half / one:.2f}) |"
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"container_limits_bench: {exc}", file=sys.stderr)
        sys.exit(1)
