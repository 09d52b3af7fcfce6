"""Custom resources checked against their own schemas: KEDA's ScaledObject, KServe's
ServingRuntime and InferenceService.

The Kubernetes schemas of ``kubernetes-validate`` know only Kubernetes' own kinds,
so ``mlscale k8s validate`` hands these kinds here instead. As there, unknown
fields are errors: the API server would otherwise drop a misspelt field in silence.

- ScaledObject: KEDA's CRD as the pydantic models of ``cloudcoil-models-keda``
  (generated from KEDA's CRDs), validated strictly (no coercion of "2" to 2),
  and every field of the object must survive the models' round trip.
- ServingRuntime and InferenceService: the ``kserve`` SDK, which carries KServe's
  own models, cannot be installed beside mlscale's pins (it requires psutil < 6
  and brings grpc, protobuf, the Kubernetes client and pandas), and no package
  ships KServe's CRDs. So :data:`SERVING_RUNTIME` and :data:`INFERENCE_SERVICE`
  spell out the fields KServe's API types define (pkg/apis/serving/v1alpha1/
  servingruntime_types.go, pkg/apis/serving/v1beta1/{component,predictor,model}.go,
  KServe 0.20), with their types and enums, for the parts mlscale renders and the
  ones a user adds most (a predictor's explainer and transformer are not covered);
  the Kubernetes types embedded in them (a Container, Volumes, an HPA behaviour,
  ObjectMeta) are validated against Kubernetes' own schemas, strict.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from mlscale.errors import ConfigurationError
from mlscale.k8s.objects import Obj, Problem, name_of

# --- a small typed description of a custom resource's fields --------------------------


@dataclass(frozen=True)
class Scalar:
    kind: type | tuple[type, ...]  # str, int, bool: a JSON scalar of that type
    enum: tuple[str, ...] = ()
    minimum: int | None = None


@dataclass(frozen=True)
class Fields:
    """An object: its known fields, and which of them are required."""

    fields: dict[str, Shape]
    required: tuple[str, ...] = ()


@dataclass(frozen=True)
class ListOf:
    item: Shape


@dataclass(frozen=True)
class MapOf:
    value: Shape


@dataclass(frozen=True)
class Kubernetes:
    """A Kubernetes type, by its schema file in kubernetes-validate: ``container-v1``."""

    definition: str


@dataclass(frozen=True)
class CheckedApart:
    """A field a function of its own checks (an InferenceService's model)."""


Shape = Scalar | Fields | ListOf | MapOf | Kubernetes | CheckedApart

STRING = Scalar(str)
BOOL = Scalar(bool)
INT = Scalar(int)
# A resource.Quantity: "2", "2.5", "500m", or a number.
QUANTITY = Scalar((str, int, float))
STRINGS = MapOf(STRING)
PROTOCOLS = ("v1", "v2", "grpc-v1", "grpc-v2")  # constants.InferenceServiceProtocol

_METRIC_TARGET = Fields(
    {
        "type": Scalar(str, ("Utilization", "Value", "AverageValue")),
        "value": QUANTITY,
        "averageValue": QUANTITY,
        "averageUtilization": INT,
    }
)
_METRICS_SPEC = Fields(
    {
        "type": Scalar(str, ("Resource", "External", "PodMetric")),
        "resource": Fields(
            {"name": Scalar(str, ("cpu", "memory")), "target": _METRIC_TARGET}, ("name", "target")
        ),
        "external": Fields(
            {
                "metric": Fields(
                    {
                        "backend": Scalar(str, ("prometheus", "graphite")),
                        "serverAddress": STRING,
                        "query": STRING,
                        "namespace": STRING,
                    }
                ),
                "authenticationRef": Fields(
                    {"authenticationRef": Fields({"name": STRING}, ("name",)), "authModes": STRING},
                    ("authenticationRef",),
                ),
                "target": _METRIC_TARGET,
            },
            ("metric", "target"),
        ),
        "podmetric": Fields(
            {
                "metric": Fields(
                    {
                        "backend": Scalar(str, ("opentelemetry",)),
                        "serverAddress": STRING,
                        "metricNames": ListOf(STRING),
                        "query": STRING,
                        "operationOverTime": STRING,
                    }
                ),
                "target": _METRIC_TARGET,
            },
            ("metric", "target"),
        ),
    },
    ("type",),
)
# ComponentExtensionSpec (component.go), inline in every component.
_COMPONENT_EXTENSION: dict[str, Shape] = {
    "minReplicas": Scalar(int, minimum=0),
    "maxReplicas": Scalar(int, minimum=0),
    "scaleTarget": INT,
    "scaleMetric": Scalar(str, ("cpu", "memory", "concurrency", "rps")),
    "scaleMetricType": Scalar(str, ("Utilization", "Value", "AverageValue")),
    "autoScaling": Fields(
        {
            "metrics": ListOf(_METRICS_SPEC),
            "behavior": Kubernetes("horizontalpodautoscalerbehavior-autoscaling-v2"),
        }
    ),
    "containerConcurrency": INT,
    "timeout": INT,
    "canaryTrafficPercent": INT,
    "labels": STRINGS,
    "annotations": STRINGS,
    "deploymentStrategy": Kubernetes("deploymentstrategy-apps-v1"),
}
# The parts of a PodSpec (inline in a predictor) that a user sets most.
_POD: dict[str, Shape] = {
    "serviceAccountName": STRING,
    "nodeSelector": STRINGS,
    "affinity": Kubernetes("affinity-v1"),
    "tolerations": ListOf(Kubernetes("toleration-v1")),
    "volumes": ListOf(Kubernetes("volume-v1")),
    "imagePullSecrets": ListOf(Kubernetes("localobjectreference-v1")),
    "priorityClassName": STRING,
}
# ModelSpec (model.go): the model's format and runtime, PredictorExtensionSpec's storage
# and protocol, and a Container inline (checked as one, see _check_inline_container).
MODEL_FIELDS: dict[str, Shape] = {
    "modelFormat": Fields({"name": STRING, "version": STRING}, ("name",)),
    "runtime": STRING,
    "storageUri": STRING,
    "runtimeVersion": STRING,
    "protocolVersion": Scalar(str, PROTOCOLS),
}
_INLINE_CONTAINER = "container-v1"

SERVING_RUNTIME = Fields(
    {
        "apiVersion": Scalar(str, ("serving.kserve.io/v1alpha1",)),
        "kind": Scalar(str, ("ServingRuntime", "ClusterServingRuntime")),
        "metadata": Kubernetes("objectmeta-meta-v1"),
        "spec": Fields(
            {
                "supportedModelFormats": ListOf(
                    Fields(
                        {
                            "name": STRING,
                            "version": STRING,
                            "autoSelect": BOOL,
                            "priority": Scalar(int, minimum=1),
                        },
                        ("name",),
                    )
                ),
                "multiModel": BOOL,
                "disabled": BOOL,
                "protocolVersions": ListOf(Scalar(str, PROTOCOLS)),
                "containers": ListOf(Kubernetes("container-v1")),
                "volumes": ListOf(Kubernetes("volume-v1")),
                "nodeSelector": STRINGS,
                "affinity": Kubernetes("affinity-v1"),
                "tolerations": ListOf(Kubernetes("toleration-v1")),
                "labels": STRINGS,
                "annotations": STRINGS,
                "imagePullSecrets": ListOf(Kubernetes("localobjectreference-v1")),
                "hostIPC": BOOL,
                "schedulerName": STRING,
                "grpcEndpoint": STRING,
                "grpcDataEndpoint": STRING,
                "httpDataEndpoint": STRING,
                "replicas": Scalar(int, minimum=0),
                "storageHelper": Fields({"disabled": BOOL}),
            },
            ("containers",),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)
INFERENCE_SERVICE = Fields(
    {
        "apiVersion": Scalar(str, ("serving.kserve.io/v1beta1",)),
        "kind": Scalar(str, ("InferenceService",)),
        "metadata": Kubernetes("objectmeta-meta-v1"),
        "spec": Fields(
            {
                "predictor": Fields(
                    {
                        **_COMPONENT_EXTENSION,
                        **_POD,
                        # The model: checked field by field below, its Container part as one.
                        "model": CheckedApart(),
                    }
                )
            },
            ("predictor",),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)
KSERVE_KINDS = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): SERVING_RUNTIME,
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): SERVING_RUNTIME,
    ("serving.kserve.io/v1beta1", "InferenceService"): INFERENCE_SERVICE,
}
KEDA_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}


def is_custom(obj: Obj) -> bool:
    """A kind this module checks (and kubernetes-validate does not know)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    return key in KSERVE_KINDS or key in KEDA_KINDS


def custom_problems(obj: Obj, kubernetes_version: str) -> list[Problem]:
    """The schema problems of a custom resource; [] when it fits."""
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    if key in KEDA_KINDS:
        return [Problem("schema", name_of(obj), f"KEDA: {m}") for m in scaled_object_errors(obj)]
    shape = KSERVE_KINDS[key]
    errors = check_shape(obj, shape, "", kubernetes_version)
    if key[1] == "InferenceService":
        model = (((obj.get("spec") or {}).get("predictor") or {}).get("model")) or None
        if model is not None:
            errors += _check_model(model, "spec.predictor.model", kubernetes_version)
    return [Problem("schema", name_of(obj), f"KServe: {m}") for m in errors]


def check_shape(value: Any, shape: Shape, at: str, version: str) -> list[str]:
    """Messages ("path: what is wrong") for ``value`` against ``shape``."""
    where = at or "(top)"
    if isinstance(shape, Scalar):
        # bool is an int in Python: a bool where a number belongs is wrong all the same.
        wrong_bool = isinstance(value, bool) and shape.kind is not bool
        if wrong_bool or not isinstance(value, shape.kind):
            return [f"{where}: {value!r} is not {_type_name(shape.kind)}"]
        if shape.enum and value not in shape.enum:
            return [f"{where}: {value!r} is not one of {', '.join(shape.enum)}"]
        if shape.minimum is not None and isinstance(value, int) and value < shape.minimum:
            return [f"{where}: {value!r} is below {shape.minimum}"]
        return []
    if isinstance(shape, ListOf):
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [
            m for i, item in enumerate(value) for m in check_shape(item, shape.item, f"{at}[{i}]", version)
        ]
    if isinstance(shape, MapOf):
        if not isinstance(value, dict):
            return [f"{where}: expected a map"]
        return [m for k, item in value.items() for m in check_shape(item, shape.value, f"{at}.{k}", version)]
    if isinstance(shape, Kubernetes):
        return kubernetes_errors(value, shape.definition, at, version)
    if isinstance(shape, CheckedApart):
        return []
    if not isinstance(value, dict):
        return [f"{where}: expected an object"]
    messages = [f"{_join(at, k)}: required" for k in shape.required if k not in value]
    for key, item in value.items():
        if key not in shape.fields:
            messages.append(f"{_join(at, key)}: unknown field")
        elif not isinstance(shape.fields[key], CheckedApart):
            messages += check_shape(item, shape.fields[key], _join(at, key), version)
    return messages


def _check_model(model: Any, at: str, version: str) -> list[str]:
    """ModelSpec: its own fields, and the rest as the Container KServe merges them into."""
    if not isinstance(model, dict):
        return [f"{at}: expected an object"]
    own = {k: v for k, v in model.items() if k in MODEL_FIELDS}
    messages = check_shape(own, Fields(MODEL_FIELDS, ("modelFormat",)), at, version)
    # KServe names the container; the Kubernetes schema requires a name.
    container = {"name": "kserve-container", **{k: v for k, v in model.items() if k not in MODEL_FIELDS}}
    return messages + kubernetes_errors(container, _INLINE_CONTAINER, at, version)


def kubernetes_errors(value: Any, definition: str, at: str, version: str) -> list[str]:
    """``value`` against a Kubernetes type's strict schema from kubernetes-validate."""
    validator = _kubernetes_validator(definition, version)
    return [
        f"{_join(at, '.'.join(str(p) for p in error.absolute_path)) or '(top)'}: {error.message}"
        for error in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    ]


@functools.lru_cache(maxsize=32)
def _kubernetes_validator(definition: str, version: str) -> Any:
    """A JSON Schema validator of one Kubernetes type, as kubernetes-validate builds its own."""
    try:
        import jsonschema
        from kubernetes_validate import utils as kv_utils
        from referencing import Registry, Resource
    except ImportError as exc:
        raise ConfigurationError(
            "Schema checks need the kubernetes-validate package: pip install kubernetes-validate"
        ) from exc
    from importlib import resources

    # The newest schemas not newer than ``version``, as kubernetes-validate picks them.
    wanted = tuple(int(p) for p in version.split(".")[:2])
    known = [v for v in kv_utils.all_versions() if _minor(v) <= wanted]
    if not known:
        raise ConfigurationError(f"No schemas for Kubernetes {version} in kubernetes-validate.")
    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{known[-1]}-local-strict"
    try:
        schema = json.loads((folder / f"{definition}.json").read_text(encoding="utf-8"))
        definitions = json.loads((folder / "_definitions.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"kubernetes-validate has no schema {definition}: {exc}") from exc
    registry: Any = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def scaled_object_errors(obj: Obj) -> list[str]:
    """A ScaledObject against KEDA's CRD (cloudcoil-models-keda): types, then unknown fields."""
    try:
        from cloudcoil.models.keda.v1alpha1 import ScaledObject
        from pydantic import ValidationError
    except ImportError as exc:
        raise ConfigurationError(
            "Checking a KEDA ScaledObject needs KEDA's schema: pip install cloudcoil-models-keda"
        ) from exc
    try:
        # strict: "2" where an integer belongs is an error, as the API server says.
        model = ScaledObject.model_validate(obj, strict=True)
    except ValidationError as exc:
        return [
            f"{'.'.join(str(p) for p in error['loc']) or '(top)'}: {error['msg']}" for error in exc.errors()
        ]
    # The models ignore fields they do not know: whatever does not come back is one.
    kept = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return [f"{path}: unknown field" for path in _dropped(obj, kept, "")]


def _dropped(given: Any, kept: Any, at: str) -> list[str]:
    if isinstance(given, dict) and isinstance(kept, dict):
        paths = []
        for key, value in given.items():
            if key not in kept:
                paths.append(_join(at, key))
            else:
                paths += _dropped(value, kept[key], _join(at, key))
        return paths
    if isinstance(given, list) and isinstance(kept, list):
        return [
            p for i, (g, k) in enumerate(zip(given, kept, strict=False)) for p in _dropped(g, k, f"{at}[{i}]")
        ]
    return []


def _join(at: str, key: str) -> str:
    return f"{at}.{key}" if at and key else at or key


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", float: "a number"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)
