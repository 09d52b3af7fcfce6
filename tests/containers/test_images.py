"""The project's images: how they are tagged, and real builds run by a real engine.

The images are built once per machine (``mlscale images build``, which CI runs
first, reuses an image whose content tag exists); these tests build whatever
is missing, then run each image as the manifests do: uid 10001, a read-only
root file system, /tmp as a tmpfs.
"""

from __future__ import annotations

import re
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest

from mlscale.containers.engine import ENGINE_VARIABLE, ca_bundle, find_engine
from mlscale.containers.images import IMAGES, ImageSpec, build_images, content_hash, select
from mlscale.errors import ContainerError
from mlscale.examples.wine import FEATURES
from tests.support.containers import container, engine_or_skip, post_json, published_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
WINE_ROW = {
    "dataframe_split": {
        "columns": list(FEATURES),
        "data": [
            [7, 0.27, 0.36, 20.7, 0.045, 45, 170, 1.001, 3, 0.45, 8.8],
            [6.3, 0.3, 0.34, 1.6, 0.049, 14, 132, 0.994, 3.3, 0.49, 9.5],
        ],
    }
}


# -- tags and engine choice: no engine needed --------------------------------


def _tree(tmp_path: Path) -> tuple[Path, ImageSpec]:
    (tmp_path / "docker").mkdir()
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "docker" / "x.Dockerfile").write_text("FROM base\n")
    (tmp_path / "pkg" / "a.py").write_text("A = 1\n")
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    return tmp_path, ImageSpec("x", "docker/x.Dockerfile", ("pkg",))


def test_content_hash_follows_every_input_and_nothing_else(tmp_path):
    root, spec = _tree(tmp_path)
    first = content_hash(root, spec, "sha256:base", {"BASE_IMAGE": "b"})
    assert re.fullmatch(r"[0-9a-f]{12}", first)
    assert content_hash(root, spec, "sha256:base", {"BASE_IMAGE": "b"}) == first
    # Bytecode caches are not content: they differ between checkouts.
    (root / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\1")
    assert content_hash(root, spec, "sha256:base", {"BASE_IMAGE": "b"}) == first
    changes = [
        content_hash(root, spec, "sha256:other", {"BASE_IMAGE": "b"}),  # a rebuilt base
        content_hash(root, spec, "sha256:base", {"BASE_IMAGE": "c"}),  # another build argument
    ]
    (root / "pkg" / "a.py").write_text("A = 2\n")
    changes.append(content_hash(root, spec, "sha256:base", {"BASE_IMAGE": "b"}))
    (root / "pkg" / "b.py").write_text("")
    changes.append(content_hash(root, spec, "sha256:base", {"BASE_IMAGE": "b"}))
    (root / "docker" / "x.Dockerfile").write_text("FROM base\nUSER 1\n")
    changes.append(content_hash(root, spec, "sha256:base", {"BASE_IMAGE": "b"}))
    assert len({first, *changes}) == 1 + len(changes)


def test_every_image_has_its_dockerfile_and_inputs():
    for spec in IMAGES:
        assert (ROOT / spec.dockerfile).is_file(), spec
        for entry in spec.inputs:
            assert (ROOT / entry).exists(), (spec.name, entry)


def test_unknown_image_names_are_refused_by_name():
    assert [spec.name for spec in select(["tracking", "server"])] == ["server", "tracking"]
    with pytest.raises(ContainerError, match="unknown image nope: choose from server"):
        select(["server", "nope"])


def test_engine_choice_errors_say_what_to_do(monkeypatch, tmp_path):
    with pytest.raises(ContainerError, match="docker or podman"):
        find_engine({ENGINE_VARIABLE: "containerd"})
    monkeypatch.setenv("PATH", str(tmp_path))  # no engine on PATH at all
    with pytest.raises(ContainerError, match=r"no container engine found.*apt-get install podman"):
        find_engine({})
    with pytest.raises(ContainerError, match="`podman` is not installed"):
        find_engine({ENGINE_VARIABLE: "podman"})


# -- the images, built and run ------------------------------------------------


@pytest.fixture(scope="module")
def images():
    """The server, Locust and tracking images (built here if `make images` did not)."""

    engine = engine_or_skip()
    built = build_images(engine, root=ROOT, names=["server", "locust", "tracking"], say=lambda line: None)
    return engine, {image.name: image.tag for image in built}


# Building an image takes minutes here; `make images` (CI's first step) builds them
# before the tests, which then only reuse them.
_BUILD_TIMEOUT = pytest.mark.timeout(1500)

_HARDENED = (
    "--read-only",
    "--tmpfs",
    "/tmp:rw,size=256m",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
)


def _runs_as_10001_read_only(engine, name):
    assert engine.run("exec", name, "id", "-u").stdout.strip() == "10001"
    assert engine.run("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", name).stdout.strip() == "true"
    # The root file system really refuses writes; /tmp (the emptyDir in the manifests) takes them.
    refused = engine.run("exec", name, "sh", "-c", "touch /opt/x", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    engine.run("exec", name, "sh", "-c", "touch /tmp/x")


def _readable_by_group(root: Path) -> None:
    """Give the folder's group read and write on the store, and the way in."""
    for path in [root, *root.parents]:
        if path == Path("/"):
            break
        path.chmod(path.stat().st_mode | 0o011)  # search for group and others
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | (0o070 if path.is_dir() else 0o060))


@pytest.mark.slow
@_BUILD_TIMEOUT
def test_server_image_serves_a_registered_model_as_in_process(images, wine_registry):
    # heavy: mlflow and pandas (1.5 s), for the one test that builds a model image
    import mlflow.pyfunc
    import pandas as pd

    engine, tags = images
    root = wine_registry["root"]
    # The registry is mounted at its own path, since the SQLite store records its
    # artifacts' absolute locations; the container's user reads it through a
    # group it is given, as a pod's fsGroup would.
    _readable_by_group(Path(root))
    options = [
        *_HARDENED,
        "--cpus",
        "1",
        "-p",
        "127.0.0.1::8080",
        "-v",
        f"{root}:{root}",
        "--group-add",
        str(Path(root).stat().st_gid),
        "-e",
        f"MLFLOW_TRACKING_URI={wine_registry['tracking_uri']}",
    ]
    with container(engine, tags["server"], "-m", wine_registry["model_uri"], options=options) as name:
        url = f"http://127.0.0.1:{published_port(engine, name, 8080)}"
        wait_http(url + "/ping", engine=engine, name=name)
        status, answer = post_json(url + "/invocations", WINE_ROW)
        _runs_as_10001_read_only(engine, name)
    assert status == 200, answer
    split = WINE_ROW["dataframe_split"]
    expected = mlflow.pyfunc.load_model(wine_registry["model_uri"]).predict(
        pd.DataFrame(split["data"], columns=split["columns"], dtype=float)
    )
    assert answer["predictions"] == pytest.approx(list(expected), rel=1e-6)


@pytest.mark.slow
@_BUILD_TIMEOUT
def test_tracking_image_serves_mlflow_read_only(images):
    engine, tags = images
    options = [*_HARDENED, "-p", "127.0.0.1::5000"]
    args = [
        "--host",
        "0.0.0.0",
        "--port",
        "5000",
        "--backend-store-uri",
        "sqlite:////tmp/mlflow.db",
        "--serve-artifacts",
        "--artifacts-destination",
        "/tmp/artifacts",
    ]
    with container(engine, tags["tracking"], *args, options=options) as name:
        url = f"http://127.0.0.1:{published_port(engine, name, 5000)}"
        wait_http(url + "/health", engine=engine, name=name, timeout_s=180)
        status, answer = post_json(url + "/api/2.0/mlflow/experiments/search", {"max_results": 5})
        _runs_as_10001_read_only(engine, name)
    assert status == 200 and answer["experiments"][0]["name"] == "Default"


@pytest.mark.slow
@_BUILD_TIMEOUT
def test_locust_image_runs_mlscales_locustfile(images):
    engine, tags = images
    # Locust imports the locustfile before it parses the rest: a listing of its
    # user classes proves the file in the image loads.
    done = engine.run("run", "--rm", *_HARDENED, tags["locust"], "--list", timeout=120)
    assert "ScoringUser" in done.stdout, done.stdout + done.stderr
    assert engine.run("run", "--rm", "--entrypoint", "id", tags["locust"], "-u").stdout.strip() == "10001"


def _certificates(text: str) -> set[str]:
    return set(re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S))


@pytest.mark.slow
@_BUILD_TIMEOUT
def test_no_build_secret_in_any_layer(images):
    """pip's CA bundle reached the builds as a secret: neither the file, nor any
    certificate that only the build machine's bundle holds, is in a layer."""

    engine, tags = images
    bundle = ca_bundle()
    if bundle is None:
        pytest.skip("pip uses no CA bundle of its own on this machine: no secret was passed")
    secret = bundle.read_bytes()
    image_bundle = engine.run(
        "run", "--rm", "--entrypoint", "cat", tags["server"], "/etc/ssl/certs/ca-certificates.crt"
    ).stdout
    # Certificates this machine adds (a TLS-intercepting proxy's, say); a
    # machine without any still checks for the whole file.
    markers = [
        c.splitlines()[1].encode() for c in _certificates(secret.decode()) - _certificates(image_bundle)
    ]
    scanned: set[str] = set()  # layers by digest: the images share their base's, read once
    with tempfile.TemporaryDirectory() as folder:
        for tag in tags.values():
            archive = Path(folder) / "image.tar"
            engine.run("save", "--format", "docker-archive", "-o", str(archive), tag, timeout=600)
            with tarfile.open(archive) as outer:
                layers = [m for m in outer.getmembers() if m.name.endswith(".tar")]
                assert layers, tag
                for layer in layers:
                    if layer.name in scanned:
                        continue
                    scanned.add(layer.name)
                    with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                        for member in inner:
                            assert "run/secrets" not in member.name, (tag, member.name)
                            if not member.isfile():
                                continue
                            content = inner.extractfile(member).read()
                            assert content != secret, (tag, member.name)
                            for marker in markers:
                                assert marker not in content, (tag, member.name)
            archive.unlink()
    shutil.rmtree(folder, ignore_errors=True)
