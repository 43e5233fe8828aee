"""The model store against a real HTTP server on loopback: downloads, archives, hashes, failures.

Why: the store is what stands between a flaky network or a swapped file and an unreadable OpenCV
protobuf error in a worker. Each failure mode (wrong hash, dropped connection, offline, corrupt
mirror copy) must end in one actionable ``FatalError`` and must never leave a file under its final
name, so these tests serve real bytes over real sockets and look at what is left on disk.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.errors import FatalError
from models import store
from tests.conftest import MODELS, REPO, SELFIE, env

FOLDER = "testmodel"


class Quiet(http.server.SimpleHTTPRequestHandler):
    """Serves the test's tmp dir; counts requests per path; no log spam."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        hits = self.server.hits  # type: ignore[attr-defined]
        hits[self.path] = hits.get(self.path, 0) + 1
        mode = self.server.mode  # type: ignore[attr-defined]
        if mode == "drop" or (mode == "drop-first" and hits[self.path] == 1):
            body = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        super().do_GET()


class Server:
    def __init__(self, root: Path) -> None:
        handler = functools.partial(Quiet, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.hits = {}  # type: ignore[attr-defined]
        self.httpd.mode = "ok"  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    @property
    def hits(self) -> dict[str, int]:
        return self.httpd.hits  # type: ignore[attr-defined]

    def set_mode(self, mode: str) -> None:
        self.httpd.mode = mode  # type: ignore[attr-defined]


@pytest.fixture
def served(tmp_path: Path) -> Path:
    d = tmp_path / "www"
    d.mkdir()
    return d


@pytest.fixture
def server(served: Path) -> Iterator[Server]:
    s = Server(served)
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh user cache; no mirror, downloads allowed."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(store.NO_DOWNLOAD_ENV, raising=False)
    monkeypatch.delenv(store.MIRROR_ENV, raising=False)
    # a developer's models/files/ must not satisfy the lookups under test
    monkeypatch.setattr(store, "PROJECT_FILES", tmp_path / "project-files")
    return tmp_path / "xdg" / "privacycam"


def sha256(data: bytes) -> dict:
    return {"algo": "sha256", "hex": hashlib.sha256(data).hexdigest()}


def plain_manifest(url: str, data: bytes, name: str = "weights.bin") -> dict:
    spec = {"name": name, "url": url, "hash": sha256(data), "size": len(data)}
    return {"m": {"folder": FOLDER, "files": {"w": spec}}}


def leftovers(cache: Path) -> list[str]:
    """Every file in the model's cache folder (hidden .part/.archive files included)."""
    d = cache / FOLDER
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def test_plain_download_lands_in_cache(server: Server, served: Path, cache: Path) -> None:
    data = os.urandom(300_000)
    (served / "weights.bin").write_bytes(data)
    manifest = plain_manifest(server.url("weights.bin"), data)
    paths = store.resolve("m", manifest=manifest, progress=lambda *a: None)
    assert paths["w"] == cache / FOLDER / "weights.bin"
    assert paths["w"].read_bytes() == data
    assert leftovers(cache) == ["weights.bin"]
    # second resolve: found and hash-checked in the cache, no new request
    assert store.resolve("m", manifest=manifest) == paths
    assert server.hits == {"/weights.bin": 1}


def make_tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_archive_members_extracted(kind: str, server: Server, served: Path, cache: Path) -> None:
    a, b = os.urandom(50_000), os.urandom(70_000)
    members = {"pkg/sub/a.bin": a, "pkg/b.bin": b, "pkg/other.txt": b"not wanted"}
    archive = make_tar(members) if kind == "tar.gz" else make_zip(members)
    (served / f"bundle.{kind}").write_bytes(archive)
    url = server.url(f"bundle.{kind}")
    arch = {"url": url, "hash": sha256(archive)}
    files = {
        "a": {"name": "a.bin", "url": url, "hash": sha256(a), "size": len(a),
              "archive": {**arch, "member": "pkg/sub/a.bin"}},
        "b": {"name": "b.bin", "url": url, "hash": sha256(b), "size": None,
              "archive": {**arch, "member": "pkg/b.bin"}},
    }  # fmt: skip
    paths = store.resolve("m", manifest={"m": {"folder": FOLDER, "files": files}})
    assert paths["a"].read_bytes() == a and paths["b"].read_bytes() == b
    assert leftovers(cache) == ["a.bin", "b.bin"]  # the archive itself was removed
    assert server.hits == {f"/bundle.{kind}": 1}  # one download for both members


def test_hash_mismatch_leaves_nothing(server: Server, served: Path, cache: Path) -> None:
    data = os.urandom(100_000)
    (served / "weights.bin").write_bytes(data)
    manifest = plain_manifest(server.url("weights.bin"), b"something else")
    manifest["m"]["files"]["w"]["size"] = None
    want = manifest["m"]["files"]["w"]["hash"]["hex"]
    with pytest.raises(FatalError) as e:
        store.resolve("m", manifest=manifest)
    msg = str(e.value)
    assert want in msg and hashlib.sha256(data).hexdigest() in msg
    assert "expected" in msg
    assert leftovers(cache) == []
    assert server.hits == {"/weights.bin": 1}  # a wrong hash is not retried


def test_dropped_connection_retried_then_fatal(server: Server, served: Path, cache: Path) -> None:
    data = os.urandom(200_000)
    (served / "weights.bin").write_bytes(data)
    server.set_mode("drop")
    url = server.url("weights.bin")
    with pytest.raises(FatalError) as e:
        store.resolve("m", manifest=plain_manifest(url, data))
    msg = str(e.value)
    print(msg)
    assert server.hits["/weights.bin"] == store.ATTEMPTS
    assert "weights.bin" in msg and url in msg
    assert str(cache / FOLDER) in msg  # where to put it
    assert "dropped" in msg
    assert leftovers(cache) == []


def test_drop_then_success(server: Server, served: Path, cache: Path) -> None:
    data = os.urandom(200_000)
    (served / "weights.bin").write_bytes(data)
    server.set_mode("drop-first")
    paths = store.resolve("m", manifest=plain_manifest(server.url("weights.bin"), data))
    assert paths["w"].read_bytes() == data
    assert server.hits["/weights.bin"] == 2
    assert leftovers(cache) == ["weights.bin"]


def test_offline_lists_files_urls_and_folders(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/weights.bin"
    manifest = plain_manifest(url, b"x")

    monkeypatch.setenv(store.NO_DOWNLOAD_ENV, "1")
    with pytest.raises(FatalError) as e:
        store.resolve("m", manifest=manifest)
    msg = str(e.value)
    for part in ("weights.bin", url, str(cache / FOLDER), "PRIVACYCAM_MODEL_MIRROR", "disabled"):
        assert part in msg, part
    assert leftovers(cache) == []

    monkeypatch.delenv(store.NO_DOWNLOAD_ENV)
    with pytest.raises(FatalError) as e:
        store.resolve("m", manifest=manifest)
    msg = str(e.value)
    for part in ("weights.bin", url, str(cache / FOLDER), "download failed"):
        assert part in msg, part
    assert leftovers(cache) == []


def test_mirror_resolves_selfie_with_hash_check(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(store.MIRROR_ENV, str(MODELS))
    monkeypatch.setenv(store.NO_DOWNLOAD_ENV, "1")
    paths = store.resolve("selfie")
    assert paths == {
        "square": SELFIE / "selfie_segmentation.tflite",
        "landscape": SELFIE / "selfie_segmentation_landscape.tflite",
    }

    # a corrupted copy (same size, one byte flipped) in another mirror is refused
    mirror = tmp_path / "mirror"
    (mirror / SELFIE.name).mkdir(parents=True)
    for p in paths.values():
        data = bytearray(p.read_bytes())
        if p.name == "selfie_segmentation.tflite":
            data[len(data) // 2] ^= 0xFF
        (mirror / SELFIE.name / p.name).write_bytes(bytes(data))
    monkeypatch.setenv(store.MIRROR_ENV, str(mirror))
    with pytest.raises(FatalError) as e:
        store.resolve("selfie")
    msg = str(e.value)
    spec = store.load_manifest()["selfie"]["files"]["square"]
    actual = hashlib.sha256((mirror / SELFIE.name / "selfie_segmentation.tflite").read_bytes())
    assert spec["hash"]["hex"] in msg and actual.hexdigest() in msg
    assert "selfie_segmentation.tflite" in msg


def run_models(*args: str, cache_dir: Path) -> subprocess.CompletedProcess:
    e = env()
    e.update(
        {
            store.MIRROR_ENV: str(MODELS),
            store.NO_DOWNLOAD_ENV: "1",
            "XDG_CACHE_HOME": str(cache_dir),
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "models", *args],
        cwd=REPO,
        env=e,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_list_and_fetch(tmp_path: Path) -> None:
    r = run_models("list", cache_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "selfie_segmentation.tflite" in r.stdout and str(SELFIE) in r.stdout
    assert "MISSING" in r.stdout  # the Mask R-CNN weights are not in the mirror

    r = run_models("fetch", "selfie", cache_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"selfie.square: {SELFIE / 'selfie_segmentation.tflite'}" in r.stdout

    r = run_models("fetch", "maskrcnn", cache_dir=tmp_path)
    print(r.stderr)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("models: error:")
    assert "frozen_inference_graph.pb" in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 5
