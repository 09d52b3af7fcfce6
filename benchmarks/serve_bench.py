"""Serving benchmark: ``mlscale serve`` against ``mlflow models serve``, side by side.

One run trains the reference model into a throw-away MLflow store, then starts
three servers in turn on core 0 and drives each with ``wrk`` from core 1:

* ``ceiling`` - the same HTTP stack (uvicorn) answering a constant body: the most
  any Python server on this stack can do, so each server's share of it is its
  own overhead;
* ``mlflow``  - ``mlflow models serve --env-manager local`` (uvicorn, 1 worker);
* ``mlscale`` - ``mlscale serve -w 1``.

Workloads: one row per request with 16 and with 1 connection (throughput and
latency), 1,000 rows per request with 4 connections (rows/s, compared with
calling ``predict`` in-process on the same rows), and the memory of each
server's process tree. Pinning server and load generator to different cores
keeps them from stealing each other's CPU, so the numbers compare servers, not
scheduler luck.

Then the Open Inference Protocol ("V2"), on the same model, core and wrk: mlscale's
``/v2/models/<name>/infer`` against mlscale's own ``/invocations`` (the cost of the
protocol) and against Seldon MLServer 1.7.1's V2 endpoint with its MLflow runtime
and adaptive batching on (``max_batch_size`` 32, ``max_batch_time`` 5 ms; inference
in the server process, as ``mlscale serve -w 1``), at 16 and 1 connections.
MLServer runs from its own venv (``tests/support/mlserver_env.py``, built on first
use); ``--v2-only`` runs this comparison alone.

Usage::

    .venv/bin/python benchmarks/serve_bench.py [--duration 10] [--quick] [--v2-only] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from mlscale.processes import free_port, signal_group, start_group

# The repository root, for tests/support/mlserver_env.py (MLServer's venv and settings).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BENCH_DIR = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
SERVER_CORE = "0"
WRK_CORE = "1"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
BATCH_ROWS = 1000

# Targets, as stated in the README; checked at the end of every run.
TARGET_SPEEDUP_16 = 15.0
TARGET_P50_1_MS = 0.5
TARGET_BATCH_SHARE = 0.80
NOISY_CPU_PCT = 20.0
QUIET_WAIT_S = 60.0


class BenchError(RuntimeError):
    """A failure that ends the benchmark with a clear message and a non-zero exit."""


# --------------------------------------------------------------------------- setup


def ensure_wrk() -> str:
    """Find wrk, installing it from Debian when missing (we run as root on a fresh box)."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found; installing it with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise BenchError(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get installed wrk but it is not on PATH")
    return found


def ensure_cores() -> None:
    """Refuse to run on fewer than 2 cores: server and wrk must not share one."""
    if len(os.sched_getaffinity(0)) < 2 or shutil.which("taskset") is None:
        raise BenchError("needs 2 usable cores and taskset (util-linux) to pin server and wrk")


def machine_facts() -> dict[str, str]:
    """What the numbers were measured on; they mean little without it."""
    import mlflow
    import uvicorn
    import xgboost

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "mlflow": mlflow.__version__,
        "uvicorn": uvicorn.__version__,
        "xgboost": xgboost.__version__,
        "wrk": re.sub(
            r"\s*Copyright.*", "", (wrk_version.stdout or wrk_version.stderr).split("\n", 1)[0]
        ).strip(),
        "kernel": platform.release(),
    }


def background_cpu_pct(sample_s: float = 1.0) -> float:
    """Busiest core's CPU use while none of our processes runs.

    Pinning keeps server and wrk apart, not other people's jobs: a test suite
    running on the same box shows up here, and is waited out (see wait_for_quiet).
    """
    return max(psutil.cpu_percent(interval=sample_s, percpu=True))


def wait_for_quiet(max_wait_s: float = QUIET_WAIT_S) -> float:
    """Give a concurrent job up to ``max_wait_s`` to finish before measuring.

    Bounded: a box that never goes quiet is measured anyway, and flagged.
    Returns the last reading.
    """
    deadline = time.monotonic() + max_wait_s
    load = background_cpu_pct()
    while load > NOISY_CPU_PCT and time.monotonic() < deadline:
        load = background_cpu_pct()
    return load


class CpuAudit:
    """CPU time spent by processes other than ours while a measurement runs.

    System busy time (all cores, idle and iowait excluded) minus what the server tree,
    this script and its waited-for children (wrk, the in-process run) used.
    The rest is somebody else's job competing for our cores; the report flags
    measurements where it reached a fifth of a core.
    """

    def __init__(self, server_pid: int | None = None) -> None:
        self.server_pid = server_pid
        self._start = self._snapshot()
        self._t0 = time.monotonic()

    def _snapshot(self) -> tuple[float, float]:
        t = psutil.cpu_times()
        # softirq too: the kernel charges loopback network work done in our
        # processes' context to them, and to softirq here. steal: the
        # hypervisor's other guests also compete for our cores.
        busy = t.user + t.nice + t.system + t.irq + t.softirq + t.steal
        ours = sum(
            r.ru_utime + r.ru_stime
            for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
        )
        if self.server_pid is not None:
            ours += _tree_cpu_s(self.server_pid)
        return busy, ours

    def foreign_pct(self) -> float:
        """Others' CPU use since start, in % of one core (0 when nothing else ran)."""
        busy, ours = self._snapshot()
        wall = max(time.monotonic() - self._t0, 1e-6)
        foreign = (busy - self._start[0]) - (ours - self._start[1])
        return max(0.0, 100 * foreign / wall)


def _tree_cpu_s(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def train_model(workdir: Path) -> str:
    """Train and register the reference model in a private SQLite store; returns its URI.

    The cwd is the temp dir so the artifacts (./mlruns) land there too and the
    run leaves nothing behind.
    """
    db = workdir / "mlflow.db"
    cmd = [str(VENV_BIN / "mlscale"), "train", "--tracking-uri", f"sqlite:///{db}"]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines or not lines[-1].startswith("models:/"):
        raise BenchError(f"mlscale train failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return lines[-1].strip()


def request_bodies() -> dict[str, bytes]:
    """The two request bodies: one row, and the first 1,000 rows, as dataframe_split JSON."""
    from mlscale.examples.wine import feature_frame

    frame = feature_frame()
    columns = list(frame.columns)

    def body(rows: list[list[float]]) -> bytes:
        return json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode()

    return {
        "one": body(frame.iloc[:1].values.tolist()),
        "batch": body(frame.iloc[:BATCH_ROWS].values.tolist()),
    }


def write_lua(workdir: Path, name: str, body: bytes) -> Path:
    """A wrk script POSTing a fixed JSON body.

    The body is read from a file rather than inlined: JSON arrays of arrays
    contain ``]]``, which would end a Lua long string.
    """
    body_path = workdir / f"{name}.json"
    body_path.write_bytes(body)
    script = workdir / f"{name}.lua"
    script.write_text(
        textwrap.dedent(
            f"""\
            local f = assert(io.open({json.dumps(str(body_path))}, "rb"))
            wrk.method = "POST"
            wrk.body = f:read("*a")
            f:close()
            wrk.headers["Content-Type"] = "application/json"
            """
        )
    )
    return script


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    """A server under test: how to start it, and its process once started."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    workers: int = 1
    proc: subprocess.Popen[bytes] | None = None


def server_env(tracking_uri: str) -> dict[str, str]:
    """The servers' environment: the store, and the venv first on PATH.

    ``mlflow models serve`` launches ``uvicorn`` by name, so the venv's must win.
    """
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_MODELS_WORKERS", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def make_servers(model_uri: str, workdir: Path) -> list[Server]:
    """The three servers, ceiling first so later ones are read against it."""
    servers = []
    for name in ("ceiling", "mlflow", "mlscale"):
        port = free_port()
        if name == "ceiling":
            argv = [
                str(VENV_BIN / "uvicorn"),
                "ceiling_app:app",
                "--app-dir",
                str(BENCH_DIR),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ]
        elif name == "mlflow":
            argv = [
                str(VENV_BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                model_uri,
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "--env-manager",
                "local",
            ]
        else:
            argv = [
                str(VENV_BIN / "mlscale"),
                "serve",
                "-m",
                model_uri,
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                "1",
            ]
        servers.append(Server(name, argv, port, workdir / f"{name}.log"))
    return servers


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_server(server: Server, env: dict[str, str]) -> None:
    """Start pinned to the server core, in its own session.

    ``taskset`` on the launcher is inherited by every child (mlflow's uvicorn),
    and the new session lets ``stop_server`` reach the whole group.
    """
    log = server.log_path.open("wb")
    try:
        server.proc = start_group(
            ["taskset", "-c", SERVER_CORE, *server.argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=server.log_path.parent,
        )
    finally:
        log.close()


def wait_ready(server: Server) -> float:
    """Poll GET /ping until it answers 200; returns seconds taken.

    Polling rather than sleeping: model loading time varies a lot, and a dead
    process is reported at once instead of after the full timeout.
    """
    assert server.proc is not None
    url = f"http://127.0.0.1:{server.port}/ping"
    start = time.monotonic()
    while time.monotonic() - start < READY_TIMEOUT_S:
        if server.proc.poll() is not None:
            raise BenchError(
                f"{server.name} exited with {server.proc.returncode} before answering /ping.\n"
                f"--- log tail ({server.log_path}) ---\n{log_tail(server.log_path)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.1)
    raise BenchError(
        f"{server.name} did not answer GET /ping within {READY_TIMEOUT_S:.0f} s.\n"
        f"--- log tail ({server.log_path}) ---\n{log_tail(server.log_path)}"
    )


def stop_server(server: Server) -> None:
    """SIGTERM the whole process group, wait for all of it, then SIGKILL what is left.

    The group, not the pid: ``mlflow models serve`` serves from a child that
    outlives a signal to the launcher alone.
    """
    proc = server.proc
    if proc is None:
        return
    server.proc = None
    pgid = proc.pid  # start_new_session: the launcher leads its own group
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
        if not signal_group(proc, sig):
            break
        if _wait_group_gone(proc, pgid, wait_s):
            break
    else:
        print(f"warning: {server.name} (pgid {pgid}) still alive after SIGKILL", file=sys.stderr)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _wait_group_gone(proc: subprocess.Popen[bytes], pgid: int, timeout_s: float) -> bool:
    """Wait until no live process is left in the group (zombies awaiting their
    reaper count as gone); True if that happened within the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc.poll()  # reap the launcher, our own child
        if not _group_members(pgid):
            return True
        time.sleep(0.1)
    return False


def _group_members(pgid: int) -> list[int]:
    members = []
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(p.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


def tree_rss_mb(pid: int) -> tuple[float, float, int]:
    """RSS of a process and all its descendants in MB, the largest single process's
    RSS, and how many processes that is.

    The whole tree counts because ``mlflow models serve`` keeps its launcher
    process alive next to the uvicorn child that serves: both are the cost of
    running it. The largest process is reported too, so a reader can compare
    serving processes alone. ``taskset`` execs, so the pid is the server's own.
    """
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    sizes = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            sizes.append(proc.memory_info().rss / 2**20)
    return sum(sizes), max(sizes, default=0.0), len(sizes)


def check_answers(server: Server, bodies: dict[str, bytes]) -> list[float]:
    """One request per body before measuring: a server answering errors fast would
    otherwise look like a fast server. Returns the one-row prediction."""
    url = f"http://127.0.0.1:{server.port}/invocations"
    first: list[float] = []
    for name, body in bodies.items():
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise BenchError(
                f"{server.name} answered {exc.code} to the {name} body: {exc.read()[:500]!r}"
            ) from exc
        if server.name == "ceiling":
            continue
        predictions = payload.get("predictions") if isinstance(payload, dict) else None
        expected = 1 if name == "one" else BATCH_ROWS
        if not isinstance(predictions, list) or len(predictions) != expected:
            raise BenchError(
                f"{server.name}: expected {expected} predictions for the {name} "
                f"body, got {str(payload)[:300]}"
            )
        if name == "one":
            first = [float(p) for p in predictions]
    return first


# --------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    """What one wrk run measured; ``valid`` is False if any request failed."""

    server: str
    workload: str
    connections: int
    duration_s: float
    requests: int = 0
    requests_per_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    rows_per_request: int = 1
    foreign_cpu_pct: float = 0.0

    @property
    def valid(self) -> bool:
        return self.requests > 0 and self.non_2xx == 0 and not any(self.socket_errors.values())

    @property
    def rows_per_s(self) -> float:
        return self.requests_per_s * self.rows_per_request


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(text: str) -> float:
    """wrk prints durations as 812.00us, 1.23ms, 2.01s or 1.5m."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"unrecognised wrk duration {text!r}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_wrk(output: str, result: WrkResult) -> WrkResult:
    """Fill a WrkResult from wrk's text report (wrk has no machine-readable output)."""
    if m := re.search(r"Requests/sec:\s+([\d.]+)", output):
        result.requests_per_s = float(m.group(1))
    if m := re.search(r"(\d+) requests in ([\d.]+\w+)", output):
        result.requests = int(m.group(1))
    if "Latency Distribution" in output:
        table = output.split("Latency Distribution", 1)[1].splitlines()[1:]
        for line in table:
            m = re.fullmatch(r"\s*(\d+)%\s+(\S+)\s*", line)
            if not m:
                break
            if m.group(1) == "50":
                result.p50_ms = to_ms(m.group(2))
            elif m.group(1) == "99":
                result.p99_ms = to_ms(m.group(2))
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        result.non_2xx = int(m.group(1))
    if m := re.search(r"Socket errors:\s+(.+)", output):
        result.socket_errors = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", m.group(1))}
    return result


def run_wrk(
    port: int,
    script: Path,
    connections: int,
    duration_s: float,
    *,
    latency: bool = True,
    path: str = "/invocations",
) -> str:
    """Run wrk pinned to the load core; wrk's -d bounds the loop, the timeout bounds wrk."""
    cmd = [
        "taskset",
        "-c",
        WRK_CORE,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
    ]
    if latency:
        cmd.append("--latency")
    cmd.append(f"http://127.0.0.1:{port}{path}")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    if result.returncode != 0:
        raise BenchError(f"wrk failed (exit {result.returncode}):\n{result.stderr}\n{result.stdout}")
    return result.stdout


# --------------------------------------------------------------------------- in-process


_INPROCESS = """
import json, sys, time
import mlflow
from mlscale.examples.wine import feature_frame

uri, rows, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
df = feature_frame().iloc[:rows]
model = mlflow.pyfunc.load_model(uri)
raw = model.get_raw_model()

def rate(fn):
    for _ in range(3):
        fn(df)
    calls, start = 0, time.perf_counter()
    end = start + duration
    while time.perf_counter() < end:
        fn(df)
        calls += 1
    return calls * rows / (time.perf_counter() - start)

print(json.dumps({"pyfunc": rate(model.predict), "raw": rate(raw.predict)}))
"""


def inprocess_rates(model_uri: str, env: dict[str, str], duration_s: float) -> dict[str, float]:
    """Rows/s of pyfunc predict and raw xgboost predict on the 1,000-row frame.

    In a subprocess pinned to the server core, so it gets exactly what each
    server got: one core, same libraries, same model.
    """
    cmd = [
        "taskset",
        "-c",
        SERVER_CORE,
        sys.executable,
        "-c",
        _INPROCESS,
        model_uri,
        str(BATCH_ROWS),
        str(duration_s),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=2 * duration_s + 180)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise BenchError(f"in-process predict failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return {k: float(v) for k, v in json.loads(lines[-1]).items()}


# --------------------------------------------------------------------------- V2

V2_NAME = "wine-quality"
V2_PATH = f"/v2/models/{V2_NAME}/infer"
# MLServer's adaptive batching, as its docs suggest trying it: a batch of up to 32
# requests, waiting at most 5 ms for it to fill.
MLSERVER_MAX_BATCH_SIZE = 32
MLSERVER_MAX_BATCH_TIME_S = 0.005


@dataclass(frozen=True)
class V2Run:
    """One measured run of the V2 comparison: which server, which endpoint."""

    server: str  # the process: "mlscale" or "mlserver"
    label: str  # how the report names it
    path: str
    body: str
    connections: int


V2_RUNS = tuple(
    run
    for connections in (16, 1)
    for run in (
        V2Run("mlscale", "mlscale /invocations", "/invocations", "one", connections),
        V2Run("mlscale", "mlscale V2 infer", V2_PATH, "v2_one", connections),
        V2Run("mlserver", "MLServer V2 infer (adaptive batching)", V2_PATH, "v2_one", connections),
    )
)


def v2_body() -> bytes:
    """The one-row request as V2 tensors: one FP64 input of shape [1] per column."""
    from mlscale.examples.wine import feature_frame

    row = feature_frame().iloc[:1]
    inputs = [
        {"name": column, "datatype": "FP64", "shape": [1], "data": row[column].tolist()}
        for column in row.columns
    ]
    return json.dumps({"inputs": inputs}).encode()


def post_json(port: int, path: str, body: bytes) -> object:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def v2_servers(model_uri: str, workdir: Path, tracking_uri: str) -> list[Server]:
    """mlscale (both endpoints from one process), then MLServer on a local copy of the model."""
    import mlflow.artifacts

    from tests.support import mlserver_env

    mlscale = next(s for s in make_servers(model_uri, workdir) if s.name == "mlscale")
    command = mlserver_env.ensure()
    # The registry too is read from the environment (download_artifacts' tracking_uri is not
    # used for a models:/ URI's registry look-up).
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    local = mlflow.artifacts.download_artifacts(model_uri, dst_path=str(workdir / "model-copy"))
    folder = workdir / "mlserver"
    port = mlserver_env.write_repository(
        folder,
        name=V2_NAME,
        model_path=local,
        max_batch_size=MLSERVER_MAX_BATCH_SIZE,
        max_batch_time=MLSERVER_MAX_BATCH_TIME_S,
    )
    mlserver = Server("mlserver", [str(command), "start", str(folder)], port, workdir / "mlserver.log")
    return [mlscale, mlserver]


def bench_v2(
    model_uri: str, workdir: Path, env: dict[str, str], args: argparse.Namespace, warmup_s: float
) -> list[WrkResult]:
    """The V2 runs, server by server; each answer checked equal before measuring."""
    bodies = {"one": request_bodies()["one"], "v2_one": v2_body()}
    scripts = {name: write_lua(workdir, f"v2-{name}", body) for name, body in bodies.items()}
    results: list[WrkResult] = []
    expected: object = None
    for server in v2_servers(model_uri, workdir, env["MLFLOW_TRACKING_URI"]):
        background = wait_for_quiet(10.0 if args.quick else QUIET_WAIT_S)
        print(
            f"\n[{server.name}] background CPU: {background:.0f} %; starting: {' '.join(server.argv)}",
            flush=True,
        )
        start_server(server, env)
        try:
            print(f"[{server.name}] ready in {wait_ready(server):.1f} s", flush=True)
            answer = post_json(server.port, V2_PATH, bodies["v2_one"])
            outputs = answer.get("outputs") if isinstance(answer, dict) else None
            if expected is None:
                expected = outputs
            elif outputs != expected:
                raise BenchError(f"{server.name}'s V2 answer differs: {outputs!r} vs mlscale's {expected!r}")
            runs = [r for r in V2_RUNS if r.server == server.name]
            for path, body in sorted({(r.path, r.body) for r in runs}):
                run_wrk(server.port, scripts[body], 4, warmup_s, latency=False, path=path)
            for run in runs:
                result = WrkResult(
                    run.label, f"V2 1 row, {run.connections} conn", run.connections, args.duration
                )
                audit = CpuAudit(server.proc.pid if server.proc else None)
                output = run_wrk(
                    server.port, scripts[run.body], run.connections, args.duration, path=run.path
                )
                result.foreign_cpu_pct = audit.foreign_pct()
                parse_wrk(output, result)
                flag = "" if result.valid else "  INVALID (errors)"
                if result.foreign_cpu_pct > NOISY_CPU_PCT:
                    flag += f"  (noisy: {result.foreign_cpu_pct:.0f} % of a core used by others)"
                print(
                    f"[{run.label}] {run.connections} conn: {result.requests_per_s:,.0f} req/s, "
                    f"p50 {fmt_ms(result.p50_ms)}, p99 {fmt_ms(result.p99_ms)}{flag}",
                    flush=True,
                )
                results.append(result)
        finally:
            stop_server(server)
    return results


def render_v2(results: list[WrkResult]) -> str:
    """The V2 table: each run beside mlscale's /invocations and MLServer's V2 at the same concurrency."""
    by_key = {(r.connections, r.server): r for r in results}
    out = [
        "## Open Inference Protocol (V2), one row per request",
        "",
        f"MLServer 1.7.1 with its MLflow runtime, adaptive batching on (max_batch_size "
        f"{MLSERVER_MAX_BATCH_SIZE}, max_batch_time {MLSERVER_MAX_BATCH_TIME_S * 1000:g} ms), inference "
        "in the server process; the same model, core and wrk as above.",
        "",
        "| connections | server / endpoint | requests/s | p50 | p99 | / mlscale /invocations "
        "| / MLServer V2 | valid |",
        "|---:|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for connections in sorted({r.connections for r in results}, reverse=True):
        base = by_key.get((connections, "mlscale /invocations"))
        theirs = by_key.get((connections, "MLServer V2 infer (adaptive batching)"))
        for r in results:
            if r.connections != connections:
                continue
            out.append(
                f"| {connections} | {r.server} | {r.requests_per_s:,.0f} | {fmt_ms(r.p50_ms)} "
                f"| {fmt_ms(r.p99_ms)} | {_ratio(r.requests_per_s, base and base.requests_per_s)} "
                f"| {_ratio(r.requests_per_s, theirs and theirs.requests_per_s)} "
                f"| {'yes' if r.valid else '**no**'} |"
            )
    noisy = [
        f"{r.server}, {r.connections} conn: {r.foreign_cpu_pct:.0f} %"
        for r in results
        if r.foreign_cpu_pct > NOISY_CPU_PCT
    ]
    if noisy:
        out += [
            "",
            "**Noisy runs:** other processes used CPU during these measurements (% of one core): "
            f"{'; '.join(noisy)}. Read the ratios, not the absolute numbers.",
        ]
    return "\n".join(out) + "\n"


def _ratio(num: float | None, den: float | None) -> str:
    """Two decimals: V2 ratios sit near 1 (and MLServer's far below it)."""
    return f"{num / den:.2f}x" if num and den else "-"


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Workload:
    name: str
    body: str
    connections: int
    rows: int
    servers: tuple[str, ...]


WORKLOADS = (
    Workload("1 row, 16 conn", "one", 16, 1, ("ceiling", "mlflow", "mlscale")),
    Workload("1 row, 1 conn", "one", 1, 1, ("ceiling", "mlflow", "mlscale")),
    Workload(f"{BATCH_ROWS} rows, 4 conn", "batch", 4, BATCH_ROWS, ("mlflow", "mlscale")),
)


def bench_server(
    server: Server,
    env: dict[str, str],
    scripts: dict[str, Path],
    bodies: dict[str, bytes],
    duration_s: float,
    warmup_s: float,
    quiet_wait_s: float,
) -> tuple[list[WrkResult], dict[str, float]]:
    """Start one server, warm it up, run its workloads, read its memory, stop it."""
    results: list[WrkResult] = []
    background = wait_for_quiet(quiet_wait_s)
    print(f"\n[{server.name}] background CPU (busiest core, idle box): {background:.0f} %", flush=True)
    print(f"[{server.name}] starting: {' '.join(server.argv)}", flush=True)
    start_server(server, env)
    try:
        took = wait_ready(server)
        print(f"[{server.name}] ready in {took:.1f} s", flush=True)
        check_answers(server, bodies)
        for body in sorted({w.body for w in WORKLOADS if server.name in w.servers}):
            run_wrk(server.port, scripts[body], 4, warmup_s, latency=False)
        for workload in WORKLOADS:
            if server.name not in workload.servers:
                continue
            result = WrkResult(
                server.name, workload.name, workload.connections, duration_s, rows_per_request=workload.rows
            )
            audit = CpuAudit(server.proc.pid if server.proc else None)
            output = run_wrk(server.port, scripts[workload.body], workload.connections, duration_s)
            result.foreign_cpu_pct = audit.foreign_pct()
            parse_wrk(output, result)
            flag = "" if result.valid else "  INVALID (errors)"
            if result.foreign_cpu_pct > NOISY_CPU_PCT:
                flag += f"  (noisy: other processes used {result.foreign_cpu_pct:.0f} % of a core)"
            print(
                f"[{server.name}] {workload.name}: {result.requests_per_s:,.0f} req/s, "
                f"p50 {fmt_ms(result.p50_ms)}, p99 {fmt_ms(result.p99_ms)}{flag}",
                flush=True,
            )
            results.append(result)
        assert server.proc is not None
        rss, largest, nprocs = tree_rss_mb(server.proc.pid)
        memory = {
            "tree_rss_mb": rss,
            "largest_process_rss_mb": largest,
            "processes": nprocs,
            "workers": server.workers,
            "rss_per_worker_mb": rss / server.workers,
            "background_cpu_pct": background,
        }
        print(
            f"[{server.name}] RSS {rss:.0f} MB over {nprocs} process(es), largest {largest:.0f} MB",
            flush=True,
        )
        return results, memory
    finally:
        stop_server(server)


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} us" if value < 1 else f"{value:.2f} ms"


def fmt_ratio(num: float | None, den: float | None, *, pct: bool = False) -> str:
    if not num or not den:
        return "-"
    return f"{100 * num / den:.0f} %" if pct else f"{num / den:.1f}x"


def evaluate_targets(
    by_key: dict[tuple[str, str], WrkResult],
    memory: dict[str, dict[str, float]],
    inproc: dict[str, float],
) -> list[dict[str, object]]:
    """The README's targets, checked against this run's numbers."""
    w16, w1, wb = (w.name for w in WORKLOADS)
    targets: list[dict[str, object]] = []

    def add(name: str, value: str, met: bool | None) -> None:
        targets.append({"target": name, "measured": value, "met": met})

    a, b = by_key.get((w16, "mlscale")), by_key.get((w16, "mlflow"))
    if a and b and a.valid and b.valid and b.requests_per_s:
        speedup = a.requests_per_s / b.requests_per_s
        p99_ok = a.p99_ms is not None and b.p99_ms is not None and a.p99_ms <= b.p99_ms
        add(
            f"1 row/16 conn: mlscale >= {TARGET_SPEEDUP_16:.0f}x mlflow req/s, p99 no worse",
            f"{speedup:.1f}x; p99 {fmt_ms(a.p99_ms)} vs {fmt_ms(b.p99_ms)}",
            speedup >= TARGET_SPEEDUP_16 and p99_ok,
        )
    else:
        add(f"1 row/16 conn: mlscale >= {TARGET_SPEEDUP_16:.0f}x mlflow req/s", "invalid run", None)
    a = by_key.get((w1, "mlscale"))
    add(
        f"1 conn: mlscale p50 <= {TARGET_P50_1_MS} ms",
        fmt_ms(a.p50_ms) if a else "-",
        bool(a and a.valid and a.p50_ms is not None and a.p50_ms <= TARGET_P50_1_MS),
    )
    a = by_key.get((wb, "mlscale"))
    if a and a.valid and inproc.get("pyfunc"):
        share = a.rows_per_s / inproc["pyfunc"]
        add(
            f"{BATCH_ROWS} rows: >= {TARGET_BATCH_SHARE:.0%} of in-process predict rows/s",
            f"{share:.0%}",
            share >= TARGET_BATCH_SHARE,
        )
    else:
        add(f"{BATCH_ROWS} rows: >= {TARGET_BATCH_SHARE:.0%} of in-process predict", "invalid", None)
    ma, mb = memory.get("mlscale"), memory.get("mlflow")
    if ma and mb:
        add(
            "memory per worker <= mlflow's",
            f"{ma['rss_per_worker_mb']:.0f} MB vs {mb['rss_per_worker_mb']:.0f} MB",
            ma["rss_per_worker_mb"] <= mb["rss_per_worker_mb"],
        )
    return targets


def render_markdown(
    facts: dict[str, str],
    duration_s: float,
    results: list[WrkResult],
    memory: dict[str, dict[str, float]],
    inproc: dict[str, float],
    targets: list[dict[str, object]],
    inproc_noise: float,
) -> str:
    """The report: one table per kind of number, ratios next to the raw figures."""
    by_key = {(r.workload, r.server): r for r in results}
    out = ["# mlscale serving benchmark", ""]
    out.append(
        f"Machine: {facts['cpu']} ({facts['cores']} cores); Python {facts['python']}, "
        f"MLflow {facts['mlflow']}, uvicorn {facts['uvicorn']}, xgboost {facts['xgboost']}, "
        f"{facts['wrk']}; kernel {facts['kernel']}. Each server pinned to core {SERVER_CORE}, wrk to core {WRK_CORE}; "
        f"{duration_s:g} s per run."
    )
    noisy = [
        f"{r.server} / {r.workload} {r.foreign_cpu_pct:.0f} %"
        for r in results
        if r.foreign_cpu_pct > NOISY_CPU_PCT
    ]
    if inproc_noise > NOISY_CPU_PCT:
        noisy.append(f"in-process predict {inproc_noise:.0f} %")
    if noisy:
        out += [
            "",
            "**Noisy run:** other processes on this machine used CPU during "
            f"these measurements (% of one core): {'; '.join(noisy)}. "
            "Their numbers are less reliable; rerun on a quiet machine.",
        ]
    out += [
        "",
        "## One row per request",
        "",
        "| workload | server | requests/s | p50 | p99 | mlscale / mlflow | share of ceiling | valid |",
        "|---|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for workload in WORKLOADS[:2]:
        ceiling = by_key.get((workload.name, "ceiling"))
        mlflow_r = by_key.get((workload.name, "mlflow"))
        for server in workload.servers:
            r = by_key.get((workload.name, server))
            if r is None:
                continue
            ratio = (
                fmt_ratio(r.requests_per_s, mlflow_r and mlflow_r.requests_per_s)
                if server == "mlscale"
                else ""
            )
            share = (
                fmt_ratio(r.requests_per_s, ceiling and ceiling.requests_per_s, pct=True)
                if server != "ceiling"
                else "100 %"
            )
            out.append(
                f"| {workload.name} | {server} | {r.requests_per_s:,.0f} | {fmt_ms(r.p50_ms)} "
                f"| {fmt_ms(r.p99_ms)} | {ratio} | {share} | {'yes' if r.valid else '**no**'} |"
            )
    wb = WORKLOADS[2]
    out += [
        "",
        f"## {BATCH_ROWS} rows per request ({wb.connections} connections)",
        "",
        "| server | requests/s | rows/s | p50 | p99 | mlscale / mlflow | % of in-process predict | valid |",
        "|---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    mlflow_b = by_key.get((wb.name, "mlflow"))
    for server in wb.servers:
        r = by_key.get((wb.name, server))
        if r is None:
            continue
        ratio = fmt_ratio(r.rows_per_s, mlflow_b and mlflow_b.rows_per_s) if server == "mlscale" else ""
        out.append(
            f"| {server} | {r.requests_per_s:,.1f} | {r.rows_per_s:,.0f} | {fmt_ms(r.p50_ms)} "
            f"| {fmt_ms(r.p99_ms)} | {ratio} | {fmt_ratio(r.rows_per_s, inproc.get('pyfunc'), pct=True)} "
            f"| {'yes' if r.valid else '**no**'} |"
        )
    if inproc:
        out.append(f"| in-process `pyfunc.predict` | | {inproc['pyfunc']:,.0f} | | | | 100 % | |")
        out.append(
            f"| in-process raw xgboost `predict` | | {inproc['raw']:,.0f} | | | | "
            f"{fmt_ratio(inproc['raw'], inproc['pyfunc'], pct=True)} | |"
        )
    out += [
        "",
        "## Memory (RSS of the whole process tree, after the runs)",
        "",
        "| server | processes | workers | RSS total | RSS per worker | largest process |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for server, m in memory.items():
        out.append(
            f"| {server} | {m['processes']:.0f} | {m['workers']:.0f} | {m['tree_rss_mb']:.0f} MB "
            f"| {m['rss_per_worker_mb']:.0f} MB | {m['largest_process_rss_mb']:.0f} MB |"
        )
    out += ["", "## Targets", "", "| target | measured | met |", "|---|---|:---:|"]
    for t in targets:
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]  # type: ignore[index]
        out.append(f"| {t['target']} | {t['measured']} | {met} |")
    return "\n".join(out) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--quick", action="store_true", help="3-second runs: a smoke check")
    parser.add_argument(
        "--v2-only",
        action="store_true",
        help="only the Open Inference Protocol comparison (mlscale V2, mlscale /invocations, MLServer V2)",
    )
    parser.add_argument(
        "--out", type=Path, default=BENCH_DIR / "results", help="folder for serve.md and serve.json"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 3.0
    if args.duration <= 0:
        parser.error("--duration must be positive")
    return args


def _raise_on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into an exception so the finally blocks stop the servers."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        return run(args)
    except BenchError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    """The whole benchmark; every process it starts is stopped before it returns."""
    ensure_cores()
    ensure_wrk()
    facts = machine_facts()
    print("Machine: " + ", ".join(f"{k}: {v}" for k, v in facts.items()), flush=True)
    warmup_s = 1.0 if args.quick else 2.0
    with tempfile.TemporaryDirectory(prefix="mlscale-bench-") as tmp:
        workdir = Path(tmp)
        print("Training the reference model...", flush=True)
        model_uri = train_model(workdir)
        tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
        print(f"Model: {model_uri} (store {tracking_uri})", flush=True)
        env = server_env(tracking_uri)
        bodies = request_bodies()
        scripts = {name: write_lua(workdir, name, body) for name, body in bodies.items()}

        if args.v2_only:
            return _finish_v2(args, bench_v2(model_uri, workdir, env, args, warmup_s), facts)

        results: list[WrkResult] = []
        memory: dict[str, dict[str, float]] = {}
        for server in make_servers(model_uri, workdir):
            server_results, memory[server.name] = bench_server(
                server,
                env,
                scripts,
                bodies,
                args.duration,
                warmup_s,
                10.0 if args.quick else QUIET_WAIT_S,
            )
            results += server_results

        print(f"\n[in-process] predict on {BATCH_ROWS} rows for {args.duration:g} s each...", flush=True)
        wait_for_quiet(10.0 if args.quick else QUIET_WAIT_S)
        audit = CpuAudit()
        inproc = inprocess_rates(model_uri, env, args.duration)
        inproc_noise = audit.foreign_pct()
        v2_results = bench_v2(model_uri, workdir, env, args, warmup_s)

    by_key = {(r.workload, r.server): r for r in results}
    targets = evaluate_targets(by_key, memory, inproc)
    report = render_markdown(facts, args.duration, results, memory, inproc, targets, inproc_noise)
    report += "\n" + render_v2(v2_results)
    print("\n" + report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve.md").write_text(report)
    payload = {
        "machine": facts,
        "duration_s": args.duration,
        "model_uri": model_uri,
        "runs": [{**asdict(r), "valid": r.valid, "rows_per_s": r.rows_per_s} for r in results],
        "in_process_rows_per_s": inproc,
        "in_process_foreign_cpu_pct": inproc_noise,
        "memory": memory,
        "targets": targets,
        "v2_runs": [{**asdict(r), "valid": r.valid} for r in v2_results],
    }
    (args.out / "serve.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"Wrote {args.out / 'serve.md'} and {args.out / 'serve.json'}")
    invalid = [f"{r.server} / {r.workload}" for r in results if not r.valid]
    if invalid:
        print("warning: runs with errors (marked invalid): " + "; ".join(invalid), file=sys.stderr)
    return 0


def _finish_v2(args: argparse.Namespace, results: list[WrkResult], facts: dict[str, str]) -> int:
    """Print and write the V2 comparison alone (``--v2-only``)."""
    report = (
        f"# mlscale serving benchmark: V2 only\n\nMachine: {facts['cpu']} ({facts['cores']} cores); "
        f"servers pinned to core {SERVER_CORE}, wrk to core {WRK_CORE}; {args.duration:g} s per run.\n\n"
        + render_v2(results)
    )
    print("\n" + report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve-v2.md").write_text(report)
    runs = [{**asdict(r), "valid": r.valid} for r in results]
    (args.out / "serve-v2.json").write_text(json.dumps({"machine": facts, "runs": runs}, indent=2) + "\n")
    print(f"Wrote {args.out / 'serve-v2.md'} and {args.out / 'serve-v2.json'}")
    return 0 if all(r.valid for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
