"""Run a load test: Locust as subprocesses on mlscale's locustfile, then the results.

With ``workers == 0`` one Locust process generates the load; with ``N`` a
Locust master and N workers run on this machine, as they would in a
master/worker deployment on Kubernetes. Every process is stopped again on
success, failure and Ctrl-C, and the whole run is bounded in time.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources

from mlscale.errors import ConfigurationError, MlscaleError
from mlscale.loadtest import CONFIG_ENV, PROGRESS_PREFIX, RESULTS_FILE
from mlscale.loadtest.bodies import (
    BodyPool,
    build_pool,
    frame_from_signature,
    load_frame,
    parse_mix,
    write_pool,
)
from mlscale.loadtest.histograms import Store
from mlscale.loadtest.records import LocustConfig, Progress
from mlscale.loadtest.resources import ResourceMonitor, find_server_pid
from mlscale.loadtest.results import Sample, build_summary, latency_distribution, timeseries
from mlscale.loadtest.shapes import RPS, Shape
from mlscale.loadtest.sla import Sla, parse_sla
from mlscale.processes import free_port, start_group, stop_groups
from mlscale.schemas.loadtest import LoadTestSummary

# Locust needs a moment to start and to stop its users; past this the run is killed.
_GRACE_S = 60.0
# Worker processes start in a few seconds; one that has not connected by then never will.
_WORKERS_WAIT_S = 30
# A whole run may measure this much short of its duration (clocks, the shape's
# one-second tick); shorter, it was stopped early.
_TICK_S = 1.5


class LoadTestError(MlscaleError):
    """The load test could not run; the message says why."""


@dataclass(frozen=True, kw_only=True)
class LoadTestSettings:
    host: str
    shape: Shape
    out_dir: str
    path: str = "/invocations"
    spawn_rate: float = 10.0
    think_time_s: float = 1.0
    think: str = "constant"  # or "random": uniform on [0, 2T]
    arrival: str = "poisson"  # or "constant" (open loop)
    workers: int = 0
    data: str | None = None
    # Generate rows from this model's signature instead of reading ``data``.
    signature_of: str | None = None
    rows_per_request: int = 1
    mix: str | None = None
    body_format: str = "split"
    max_in_flight: int = 1000
    sla: Sla | None = None
    server_pid: int | None = None
    web_ui: bool = False
    # Pin the Locust processes to these cores (taskset), away from the server's.
    cpu_affinity: tuple[int, ...] | None = None
    # Write report.html (the capacity search skips it for its many short steps).
    report: bool = True
    extra_locust_args: tuple[str, ...] = field(default_factory=tuple)
    # Sent as "Authorization: Bearer" to a server started with --auth-token; passed to
    # Locust in its environment, and never written to the results.
    auth_token: str | None = field(default=None, repr=False)

    @property
    def mode(self) -> str:
        return "open" if self.shape.kind == RPS else "closed"

    def describe(self) -> dict:
        data = asdict(self)
        data["shape"] = self.shape.to_dict()
        data["sla"] = self.sla.expr if self.sla else None
        data["mode"] = self.mode
        data["auth_token"] = "(set)" if self.auth_token else None
        return data


@dataclass(frozen=True)
class LoadTestResult:
    summary: LoadTestSummary
    rows: list[dict]
    out_dir: str


def locustfile_path() -> str:
    return str(resources.files("mlscale.loadtest") / "locustfile.py")


def _locust(*args: str, cores: tuple[int, ...] | None = None) -> list[str]:
    pin = ["taskset", "-c", ",".join(map(str, cores))] if cores else []
    return [*pin, sys.executable, "-m", "locust", "-f", locustfile_path(), *args]


def request_pool(settings: LoadTestSettings) -> BodyPool:
    """The request bodies for ``settings``: rows of its data (or its model's signature)."""
    frame = (
        frame_from_signature(settings.signature_of) if settings.signature_of else load_frame(settings.data)
    )
    return build_pool(frame, parse_mix(settings.mix, settings.rows_per_request), settings.body_format)


def locust_config(
    settings: LoadTestSettings,
    *,
    out: str,
    bodies: str | None = None,
    pool: BodyPool | None = None,
    summarize: bool = False,
) -> LocustConfig:
    """The locustfile's configuration (what ``MLSCALE_LOADTEST_CONFIG`` names) for ``settings``.

    Paths are as the Locust processes see them, which in a container is not
    where this process wrote them: ``out`` is where the master writes its
    results, ``bodies`` a file of request bodies; or ``pool`` carries the
    bodies inline, so that the whole configuration is one file (one key of a
    Kubernetes ConfigMap). ``summarize``: the master also writes the summary,
    time series and report at the end of each test (in a cluster, where no
    mlscale process waits for its results), from :func:`settings_from_config`.
    """
    config: LocustConfig = {
        "mode": settings.mode,
        "shape": settings.shape.to_dict(),
        "spawn_rate": settings.spawn_rate,
        "think_time_s": settings.think_time_s,
        "think": settings.think,
        "arrival": settings.arrival,
        "dispatchers": max(1, settings.workers),
        "workers": settings.workers,
        "max_in_flight": settings.max_in_flight,
        "path": settings.path,
        "out": out,
    }
    if bodies is not None:
        config["bodies"] = bodies
    if pool is not None:
        config["pool"] = pool.to_dict()
    if summarize:
        config["summarize"] = True
        config["sla"] = settings.sla.expr if settings.sla else None
    return config


def settings_from_config(config: LocustConfig, *, host: str, out_dir: str) -> LoadTestSettings:
    """The settings a locustfile configuration was written from, as far as the
    summary needs them (the shape, the user's behaviour, the workers, the SLA)."""
    return LoadTestSettings(
        host=host,
        shape=Shape.from_dict(config["shape"]),
        out_dir=out_dir,
        path=config.get("path", "/invocations"),
        spawn_rate=config.get("spawn_rate", 10.0),
        think_time_s=config.get("think_time_s", 1.0),
        think=config.get("think", "constant"),
        arrival=config.get("arrival", "poisson"),
        workers=config.get("workers", 0),
        max_in_flight=config.get("max_in_flight", 1000),
        sla=parse_sla(sla) if (sla := config.get("sla")) else None,
    )


def run_loadtest(
    settings: LoadTestSettings, on_progress: Callable[[Progress], None] | None = None
) -> LoadTestResult:
    out = os.path.abspath(settings.out_dir)
    os.makedirs(out, exist_ok=True)
    stale = os.path.join(out, RESULTS_FILE)  # a previous run's results must not be read as ours
    if os.path.exists(stale):
        os.remove(stale)
    write_pool(request_pool(settings), os.path.join(out, "bodies.json"))
    config = locust_config(settings, out=out, bodies=os.path.join(out, "bodies.json"))
    config_path = os.path.join(out, "locust_config.json")
    with open(config_path, "w") as handle:
        json.dump(config, handle, indent=2)

    env = {**os.environ, CONFIG_ENV: config_path, "TARGET_HOST": settings.host}
    if settings.auth_token:
        env["MLSCALE_AUTH_TOKEN"] = settings.auth_token
    common = ["--host", settings.host, "--only-summary", "--loglevel", "WARNING"]
    common += (
        ["--headless"]
        if not settings.web_ui
        else [
            "--autostart",
            "--autoquit",
            "5",
            "--web-host",
            "127.0.0.1",
        ]
    )
    log_path = os.path.join(out, "locust.log")
    # The master (text: its progress lines are read) and the workers (their output dropped).
    processes: list[subprocess.Popen[str] | subprocess.Popen[bytes]] = []
    log = open(log_path, "w")
    try:
        if settings.workers == 0:
            master = start_group(
                _locust(*common, *settings.extra_locust_args, cores=settings.cpu_affinity),
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            processes.append(master)
        else:
            port = free_port()
            master = start_group(
                # A worker that never connects (it died starting) ends the run in
                # _WORKERS_WAIT_S with Locust's message, instead of at the deadline.
                _locust(
                    *common,
                    "--master",
                    "--expect-workers",
                    str(settings.workers),
                    "--expect-workers-max-wait",
                    str(_WORKERS_WAIT_S),
                    "--master-bind-host",
                    "127.0.0.1",
                    "--master-bind-port",
                    str(port),
                    *settings.extra_locust_args,
                    cores=settings.cpu_affinity,
                ),
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            processes.append(master)
            for _ in range(settings.workers):
                processes.append(
                    start_group(
                        _locust(
                            "--worker",
                            "--master-host",
                            "127.0.0.1",
                            "--master-port",
                            str(port),
                            "--loglevel",
                            "WARNING",
                            cores=settings.cpu_affinity,
                        ),
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                    )
                )
        server_pid = settings.server_pid or find_server_pid(settings.host)
        monitor = ResourceMonitor(
            server_pid, [p.pid for p in processes], metrics_url=f"{settings.host}/metrics"
        ).start()
        reader = threading.Thread(target=_read_progress, args=(master, on_progress), daemon=True)
        reader.start()
        deadline = time.monotonic() + settings.shape.duration_s + _GRACE_S
        killed = _wait(master, deadline)
        samples = monitor.stop()
        reader.join(5)
    finally:
        stop_groups(processes, grace_s=15)
        log.close()

    note = (
        None
        if server_pid is not None
        else ("server resources not measured (give --server-pid for a remote target)")
    )
    return collect(
        settings,
        out,
        samples,
        killed=killed,
        returncode=master.returncode,
        log_path=log_path,
        notes=[note] if note else [],
    )


def _read_progress(master: subprocess.Popen[str], on_progress: Callable[[Progress], None] | None) -> None:
    assert master.stdout is not None  # started with stdout=PIPE
    with master.stdout:  # closed at the end, by the one thread that reads it
        for line in master.stdout:
            if line.startswith(PROGRESS_PREFIX) and on_progress is not None:
                with contextlib.suppress(ValueError, TypeError):
                    on_progress(json.loads(line[len(PROGRESS_PREFIX) :]))


def _wait(master: subprocess.Popen[str], deadline: float) -> bool:
    """Wait for Locust to finish; True when it had to be stopped at the deadline."""
    try:
        master.wait(timeout=max(deadline - time.monotonic(), 1))
        return False
    except subprocess.TimeoutExpired:
        master.send_signal(signal.SIGTERM)
        try:
            master.wait(timeout=15)
        except subprocess.TimeoutExpired:
            master.kill()
        return True


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path) as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


def collect(
    settings: LoadTestSettings,
    out: str,
    samples: list[Sample],
    *,
    killed: bool = False,
    returncode: int | None = None,
    log_path: str = "",
    problems: list[str] | tuple[str, ...] = (),
    notes: list[str] | tuple[str, ...] = (),
) -> LoadTestResult:
    """The run's summary, time series and report, from the master's results in ``out``.

    ``samples`` are the resources measured meanwhile, wherever they came from
    (this machine's processes, or a container engine); ``problems`` are the
    caller's own reasons the run is invalid, ``notes`` what the reader should
    know (what was not measured).
    """
    results_path = os.path.join(out, RESULTS_FILE)
    if not os.path.exists(results_path):
        raise LoadTestError(
            f"Locust stopped (exit status {returncode}) without results. Its log "
            f"({log_path}) ends with:\n{_tail(log_path)}"
        )
    with open(results_path) as handle:
        raw = json.load(handle)
    store = Store()
    store.add(raw["windows"])
    start, end = raw["start"] or time.time(), raw["end"] or time.time()
    # Only the test itself: Locust's start-up (imports) would read as a busy generator.
    samples = [s for s in samples if int(start) < s.second < int(end)]
    problems = list(problems)
    if killed:
        problems.append("Locust did not stop on time and was stopped; the end of the run is cut.")
    elif end - start < settings.shape.duration_s - _TICK_S:
        # Locust stops a test by itself when its last worker is lost (and on Ctrl-C);
        # its figures are then those of a shorter, lighter run than the one asked.
        why = " (Locust stops when its last worker is lost)" if settings.workers else ""
        problems.append(
            f"the run stopped after {end - start:.0f} s of the {settings.shape.duration_s:.0f} s "
            f"asked{why}: the load and the figures cover only that part."
        )
    if raw.get("cpu_warnings"):
        problems.append("Locust warned that a generator process was above 90 % CPU: add --workers.")
    if settings.workers:
        # Worker counts while the shape ran, past the first seconds of connecting.
        seen = [w for second, w in raw.get("workers", []) if w is not None and start + 2 <= second < end - 1]
        if seen and min(seen) < settings.workers:
            problems.append(
                f"a load generator worker was lost during the run ({min(seen)} of "
                f"{settings.workers} left): the load was lower than asked."
            )
    summary = build_summary(
        store,
        start=start,
        end=end,
        shape=settings.shape,
        samples=samples,
        sla=settings.sla,
        problems=problems,
        config=settings.describe(),
    )
    if notes:
        summary = summary.model_copy(update={"notes": tuple(notes)})
    rows = timeseries(store, start=start, shape=settings.shape, samples=samples)
    _write_outputs(out, summary, rows)
    if settings.report:
        # Here, not at the top: plotly takes about 0.4 s to import, and the capacity search
        # runs its many short steps without a report.
        from mlscale.report.loadtest import write_report

        distribution = latency_distribution(store)
        write_report(os.path.join(out, "report.html"), summary, rows, distribution, settings.shape)
    return LoadTestResult(summary, rows, out)


def _write_outputs(out: str, summary: LoadTestSummary, rows: list[dict]) -> None:
    with open(os.path.join(out, "summary.json"), "w") as handle:
        handle.write(summary.to_json())
    columns = [
        "elapsed_s",
        "stage",
        "users",
        "target_rps",
        "rps",
        "failures_per_s",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "server_cpu",
        "server_rss_mb",
        "generator_cpu",
        "in_flight",
        "queue_wait_ms",
        "batch_rows",
    ]
    with open(os.path.join(out, "timeseries.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def check_host(host: str) -> str:
    if not host.startswith(("http://", "https://")):
        raise ConfigurationError(f"--host must be a URL such as http://127.0.0.1:5000, not {host!r}.")
    return host.rstrip("/")
