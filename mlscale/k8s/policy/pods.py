"""Policies on containers and what they carry: no ReplicationController, requests
and limits, probes, non-root and read-only root file systems, pinned images, no
credentials in plain text (env, Secrets written in YAML, ConfigMap keys and config
files), and ``$(VAR)`` references that Kubernetes expands."""

from __future__ import annotations

import re

from mlscale.k8s.objects import Obj, Problem, containers, name_of

# Environment variable names that hold credentials: their value must come from a Secret.
_SECRET_NAME = re.compile(
    r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL|API_KEY", re.IGNORECASE
)
# scheme://user:password@host with a literal password (not a $(VAR) reference).
_URL_PASSWORD = re.compile(r"://[^:/@\s]+:(?!\$\()[^@\s]+@")
# ConfigMap keys and config-file settings that name a credential ("key" alone
# as the last word: tls.key, signing-key; not "monkey" or "key_column").
_CREDENTIAL_KEY = re.compile(_SECRET_NAME.pattern + r"|PWD|(?:^|[_.-])KEY$", re.IGNORECASE)
# Files in a ConfigMap that are configuration (name = value lines), as opposed
# to scripts, whose `password = os.environ[...]` is code, not a value.
_CONFIG_FILE_SUFFIXES = (".ini", ".cfg", ".conf", ".env", ".properties", ".toml", ".yaml", ".yml")
# `name = value` or `name: value` with a literal value: not empty, not a
# ${VAR}/$(VAR)/%(var)s reference, not a comment.
_CONFIG_SETTING = re.compile(r"""^\s*["']?([\w.-]+)["']?\s*[=:]\s*["']?(?![$%]|["'#;]|\s*$)\S""")
# kustomize's generator suffix: a hyphen and 10 characters of its hash alphabet.
_GENERATED_NAME = re.compile(r"-[2456789bcdfghkmt]{10}$")
_VAR_REFERENCE = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def check_no_replication_controllers(objects: list[Obj]) -> list[Problem]:
    return [
        Problem("workload-kind", name_of(o), "ReplicationController is deprecated: use a Deployment")
        for o in objects
        if o.get("kind") == "ReplicationController"
    ]


def check_resources(objects: list[Obj]) -> list[Problem]:
    """Requests let the scheduler place pods and the HPA compute utilisation; limits cap them."""
    problems = []
    for obj in objects:
        for _spec, container, where in containers(obj):
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                missing = [r for r in ("cpu", "memory") if r not in (resources.get(bound) or {})]
                if missing:
                    problems.append(Problem("resources", where, f"no {bound} for {', '.join(missing)}"))
    return problems


def check_probes(objects: list[Obj]) -> list[Problem]:
    """A container that serves (declares a port) needs readiness and liveness probes."""
    problems = []
    for obj in objects:
        for _spec, container, where in containers(obj):
            if not container.get("ports"):
                continue
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    problems.append(Problem("probes", where, f"serves on a port but has no {probe}"))
    return problems


def check_security(objects: list[Obj]) -> list[Problem]:
    """Non-root, no privilege escalation, a read-only root file system."""
    problems = []
    for obj in objects:
        for spec, container, where in containers(obj):
            pod_context = spec.get("securityContext") or {}
            context = container.get("securityContext") or {}
            non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
            user = context.get("runAsUser", pod_context.get("runAsUser"))
            if non_root is not True:
                problems.append(Problem("non-root", where, "runAsNonRoot is not true"))
            if user == 0:
                problems.append(Problem("non-root", where, "runAsUser is 0 (root)"))
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(Problem("non-root", where, "allowPrivilegeEscalation is not false"))
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(Problem("read-only-root", where, "readOnlyRootFilesystem is not true"))
    return problems


def check_images(objects: list[Obj]) -> list[Problem]:
    """Every image names a fixed version: a tag other than latest, or a digest."""
    problems = []
    for obj in objects:
        for _spec, container, where in containers(obj):
            image = str(container.get("image") or "")
            if "@sha256:" in image:
                continue
            last = image.rsplit("/", 1)[-1]
            tag = last.split(":", 1)[1] if ":" in last else None
            if not image:
                problems.append(Problem("image-pinned", where, "no image"))
            elif tag is None or tag == "latest":
                problems.append(
                    Problem(
                        "image-pinned",
                        where,
                        f"image {image!r} is not pinned to a version (a tag other than latest, or a digest)",
                    )
                )
    return problems


def check_secrets_not_plain(objects: list[Obj]) -> list[Problem]:
    """Credentials come from Secrets, never from a literal value in a manifest."""
    problems = []
    for obj in objects:
        for _spec, container, where in containers(obj):
            for variable in container.get("env") or []:
                name, value = str(variable.get("name", "")), variable.get("value")
                if value in (None, ""):
                    continue
                if _SECRET_NAME.search(name):
                    problems.append(
                        Problem(
                            "secrets",
                            where,
                            f"{name} has a literal value: take it from a Secret (valueFrom.secretKeyRef)",
                        )
                    )
                elif _URL_PASSWORD.search(str(value)):
                    problems.append(
                        Problem(
                            "secrets",
                            where,
                            f"{name} holds a URL with a literal "
                            "password: build it from $(VARS) set from a Secret",
                        )
                    )
            for arg in [*(container.get("command") or []), *(container.get("args") or [])]:
                if _URL_PASSWORD.search(str(arg)):
                    problems.append(
                        Problem("secrets", where, "an argument holds a URL with a literal password")
                    )
        if obj.get("kind") == "Secret":
            problems += _secret_in_manifest(obj)
        elif obj.get("kind") == "ConfigMap":
            problems += _credentials_in_config_map(obj)
    return problems


def _secret_in_manifest(secret: Obj) -> list[Problem]:
    """A Secret written out in YAML: stringData is plain text, data only base64 of it.

    Generated Secrets are the exception: kustomize's secretGenerator reads an
    untracked file (deploy/components/postgres-secret) and names the Secret with
    a hash of its content, which is how they are told apart here. Its
    ``literals`` would put the values in the kustomization itself: tests keep
    those out of deploy/.
    """
    filled = [key for key in ("stringData", "data") if secret.get(key)]
    name = str((secret.get("metadata") or {}).get("name") or "")
    if not filled or _GENERATED_NAME.search(name):
        return []
    what = "in plain text" if filled[0] == "stringData" else "only base64-encoded, which anyone reads"
    return [
        Problem(
            "secrets",
            name_of(secret),
            f"{filled[0]} in a manifest: the values are {what}; "
            "create the Secret with `kubectl create secret` or a secretGenerator "
            "reading an untracked file",
        )
    ]


def _credentials_in_config_map(config_map: Obj) -> list[Problem]:
    """A ConfigMap is readable by anyone who may read the namespace's configuration:
    no credential-looking key with a value, no `password = ...` in a config file."""
    problems = []
    for section in ("data", "binaryData"):
        for key, value in (config_map.get(section) or {}).items():
            text = str(value or "")
            if not text.strip():
                continue
            if _CREDENTIAL_KEY.search(str(key)):
                problems.append(
                    Problem(
                        "secrets",
                        name_of(config_map),
                        f"{section} key {key!r} looks like a credential and has a value: put it in a Secret",
                    )
                )
            elif _URL_PASSWORD.search(text):
                problems.append(
                    Problem("secrets", name_of(config_map), f"{key!r} holds a URL with a literal password")
                )
            elif section == "data" and str(key).endswith(_CONFIG_FILE_SUFFIXES):
                for line in text.splitlines():
                    setting = _CONFIG_SETTING.match(line)
                    if setting and _CREDENTIAL_KEY.search(setting.group(1)):
                        problems.append(
                            Problem(
                                "secrets",
                                name_of(config_map),
                                f"{key!r} sets "
                                f"{setting.group(1)} to a literal value: take it "
                                "from a Secret (an environment variable)",
                            )
                        )
    return problems


def check_variable_references(objects: list[Obj]) -> list[Problem]:
    """$(VAR) is expanded only from variables defined before it (in env) or at all (in args).

    Kustomize's strategic merge puts patched variables first, so a reference
    that was fine in the base can end up before its definition.
    """
    problems = []
    for obj in objects:
        for _spec, container, where in containers(obj):
            defined: list[str] = []
            env = [str(v.get("name")) for v in container.get("env") or []]
            for variable in container.get("env") or []:
                for ref in _VAR_REFERENCE.findall(str(variable.get("value") or "")):
                    if ref not in defined:
                        later = "is defined after it" if ref in env else "is not defined"
                        problems.append(
                            Problem(
                                "variables",
                                where,
                                f"{variable.get('name')} uses $({ref}), which {later}: it stays unexpanded",
                            )
                        )
                defined.append(str(variable.get("name")))
            for arg in [*(container.get("command") or []), *(container.get("args") or [])]:
                for ref in _VAR_REFERENCE.findall(str(arg)):
                    if ref not in env:
                        problems.append(
                            Problem(
                                "variables", where, f"argument {arg!r} uses $({ref}), which is not in env"
                            )
                        )
    return problems
