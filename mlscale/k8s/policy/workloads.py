"""Policies on mlscale's own workloads: the model server is scraped and drained
before it stops; Locust runs the locustfile mlscale ships, against a target."""

from __future__ import annotations

from mlscale.k8s import LOCUSTFILE_IN_IMAGE
from mlscale.k8s.objects import Obj, Problem, command_option, containers


def _is_mlscale_serve(container: Obj) -> bool:
    words = [*(container.get("command") or []), *(container.get("args") or [])]
    return words[:2] == ["mlscale", "serve"]


def check_model_server(objects: list[Obj]) -> list[Problem]:
    """mlscale serve: scraped by Prometheus, and drained before it stops."""
    problems = []
    for obj in objects:
        template = (obj.get("spec") or {}).get("template") or {}
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        for spec, container, where in containers(obj):
            if not _is_mlscale_serve(container):
                continue
            if annotations.get("prometheus.io/scrape") != "true":
                problems.append(Problem("metrics", where, "no prometheus.io/scrape annotation"))
            words = [*(container.get("command") or []), *(container.get("args") or [])]
            pre_stop = ((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
            pause = float(pre_stop.get("seconds", 0))
            drain = float(command_option(words, "--drain-delay") or 0)
            if pause == 0 and drain == 0:
                problems.append(
                    Problem(
                        "graceful-shutdown",
                        where,
                        "no preStop sleep and no --drain-delay: requests routed during endpoint removal fail",
                    )
                )
            grace = float(spec.get("terminationGracePeriodSeconds", 30))
            graceful = float(command_option(words, "--graceful-timeout") or 30)
            if grace < pause + drain + graceful:
                problems.append(
                    Problem(
                        "graceful-shutdown",
                        where,
                        f"terminationGracePeriodSeconds "
                        f"{grace:g} < preStop {pause:g} + drain {drain:g} + "
                        f"graceful timeout {graceful:g}: in-flight requests are "
                        "killed",
                    )
                )
    return problems


def check_locust(objects: list[Obj]) -> list[Problem]:
    """Locust runs the locustfile mlscale ships, as master or worker, against TARGET_HOST."""
    problems = []
    for obj in objects:
        for _spec, container, where in containers(obj):
            words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
            if not words or words[0].rsplit("/", 1)[-1] != "locust":
                continue
            locustfile = command_option(words, "-f", "--locustfile")
            if locustfile != LOCUSTFILE_IN_IMAGE:
                problems.append(
                    Problem(
                        "locust",
                        where,
                        f"runs {locustfile!r}, not mlscale's locustfile {LOCUSTFILE_IN_IMAGE}",
                    )
                )
            if not {"--master", "--worker"} & set(words):
                problems.append(Problem("locust", where, "neither --master nor --worker"))
            env = {v.get("name") for v in container.get("env") or []}
            if "TARGET_HOST" not in env and command_option(words, "-H", "--host") is None:
                problems.append(Problem("locust", where, "no TARGET_HOST (or --host): no target"))
    return problems
