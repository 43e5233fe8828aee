"""Model store: lookup order, hash checks and downloads against a real HTTP server on 127.0.0.1.

The served bytes are the real model files from shared/ (and archives built from them), so the
hashes checked are the manifest's real ones wherever the file is a real one.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
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

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SELFIE = SHARED / "models" / "selfie-segmentation"
pytestmark = pytest.mark.skipif(not SELFIE.is_dir(), reason=f"no shared models at {SELFIE}")
REAL = store.load_manifest()


class Server:
    """Serves ``routes`` (path -> bytes); ``mode[path]`` = "ok" | "drop" | "drop-once" | "404"."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.mode: dict[str, str] = {}
        self.hits: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                outer.hits.append(self.path)
                body = outer.routes.get(self.path)
                mode = outer.mode.get(self.path, "ok")
                if body is None or mode == "404":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode in ("drop", "drop-once"):
                    if mode == "drop-once":
                        outer.mode[self.path] = "ok"
                    self.wfile.write(body[: len(body) // 2])  # then the connection closes
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private user cache and project folder; no mirror; downloads allowed; no retry wait."""
    monkeypatch.setattr(store, "PROJECT_FILES", tmp_path / "project-files")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PRIVACYCAM_MODEL_MIRROR", raising=False)
    monkeypatch.delenv("PRIVACYCAM_NO_DOWNLOAD", raising=False)
    monkeypatch.setattr(store.time, "sleep", lambda s: None)
    return tmp_path


def selfie_manifest(url: str) -> dict:
    """The real selfie square entry, served directly (not from the wheel) at ``url``."""
    spec = dict(REAL["selfie"]["files"]["square"])
    spec.pop("archive")
    spec["url"] = url
    return {"selfie-test": {"folder": "selfie-test", "files": {"square": spec}}}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def quiet(name: str, done: int, total: int | None) -> None:
    pass


def test_download_checks_hash_and_is_reused(server: Server, isolated: Path) -> None:
    data = (SELFIE / "selfie_segmentation.tflite").read_bytes()
    server.routes["/square.tflite"] = data
    manifest = selfie_manifest(server.url + "/square.tflite")
    paths = store.resolve("selfie-test", manifest=manifest, progress=quiet)
    dest = isolated / "cache" / "privacycam" / "selfie-test" / "selfie_segmentation.tflite"
    assert paths == {"square": dest} and dest.read_bytes() == data
    assert leftovers(dest.parent) == []
    assert store.resolve("selfie-test", manifest=manifest) == {"square": dest}
    assert server.hits == ["/square.tflite"]  # second resolve found the cached, checked file


def test_dropped_connection_is_retried(server: Server, isolated: Path) -> None:
    server.routes["/m"] = (SELFIE / "selfie_segmentation.tflite").read_bytes()
    server.mode["/m"] = "drop-once"
    paths = store.resolve(
        "selfie-test", manifest=selfie_manifest(server.url + "/m"), progress=quiet
    )
    assert paths["square"].is_file() and server.hits == ["/m", "/m"]
    assert leftovers(paths["square"].parent) == []


def test_failed_download_leaves_nothing_and_a_later_run_succeeds(
    server: Server, isolated: Path
) -> None:
    server.routes["/m"] = (SELFIE / "selfie_segmentation.tflite").read_bytes()
    server.mode["/m"] = "drop"
    manifest = selfie_manifest(server.url + "/m")
    with pytest.raises(FatalError, match="download failed") as err:
        store.resolve("selfie-test", manifest=manifest, progress=quiet)
    assert "selfie_segmentation.tflite" in str(err.value) and server.url in str(err.value)
    assert len(server.hits) == store.ATTEMPTS
    folder = isolated / "cache" / "privacycam" / "selfie-test"
    assert list(folder.iterdir()) == []  # no partial file under any name
    server.mode["/m"] = "ok"
    assert store.resolve("selfie-test", manifest=manifest, progress=quiet)["square"].is_file()


def test_interrupted_download_leaves_no_file(server: Server, isolated: Path) -> None:
    server.routes["/m"] = (SELFIE / "selfie_segmentation.tflite").read_bytes()

    def ctrl_c(name: str, done: int, total: int | None) -> None:
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.resolve("selfie-test", manifest=selfie_manifest(server.url + "/m"), progress=ctrl_c)
    assert list((isolated / "cache" / "privacycam" / "selfie-test").iterdir()) == []


def test_wrong_bytes_are_rejected(server: Server, isolated: Path) -> None:
    server.routes["/m"] = (SELFIE / "selfie_segmentation_landscape.tflite").read_bytes()
    manifest = selfie_manifest(server.url + "/m")
    manifest["selfie-test"]["files"]["square"]["size"] = None  # let the hash be what catches it
    with pytest.raises(FatalError) as err:
        store.resolve("selfie-test", manifest=manifest, progress=quiet)
    want = REAL["selfie"]["files"]["square"]["hash"]["hex"]
    got = hashlib.sha256(server.routes["/m"]).hexdigest()
    assert want in str(err.value) and got in str(err.value)
    assert list((isolated / "cache" / "privacycam" / "selfie-test").iterdir()) == []


def test_http_404_is_a_fatal_error(server: Server) -> None:
    with pytest.raises(FatalError, match="404"):
        store.resolve("selfie-test", manifest=selfie_manifest(server.url + "/nope"), progress=quiet)


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_members_are_extracted_once(server: Server, isolated: Path, kind: str) -> None:
    names = {
        "square": "selfie_segmentation.tflite",
        "landscape": "selfie_segmentation_landscape.tflite",
    }
    buf = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buf, "w") as z:
            for name in names.values():
                z.write(SELFIE / name, f"pkg/modules/{name}")
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            for name in names.values():
                t.add(SELFIE / name, f"pkg/modules/{name}")
    server.routes["/a"] = buf.getvalue()
    arch_hash = {"algo": "sha256", "hex": hashlib.sha256(buf.getvalue()).hexdigest()}
    files = {}
    for key, name in names.items():
        spec = json.loads(json.dumps(REAL["selfie"]["files"][key]))  # real member hashes
        spec["url"] = server.url + "/a"
        spec["archive"] = {
            "url": server.url + "/a",
            "hash": arch_hash,
            "member": f"pkg/modules/{name}",
        }
        files[key] = spec
    manifest = {"arch": {"folder": "arch", "files": files}}
    paths = store.resolve("arch", manifest=manifest, progress=quiet)
    assert server.hits == ["/a"]
    for key, name in names.items():
        assert paths[key].read_bytes() == (SELFIE / name).read_bytes()
    assert leftovers(paths["square"].parent) == []  # the archive itself is not kept


def test_offline_message_lists_files_urls_and_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVACYCAM_NO_DOWNLOAD", "1")
    with pytest.raises(FatalError) as err:
        store.resolve("maskrcnn")
    msg = str(err.value)
    for needle in (
        "frozen_inference_graph.pb",
        "mask_rcnn_inception_v2_coco_2018_01_28.tar.gz",
        "mask_rcnn_inception_v2_coco_2018_01_28.pbtxt",
        "PRIVACYCAM_MODEL_MIRROR",
        str(store.cache_root() / "mask-rcnn-coco"),
    ):
        assert needle in msg
    monkeypatch.delenv("PRIVACYCAM_NO_DOWNLOAD")
    with pytest.raises(FatalError, match="downloads disabled"):
        store.resolve("maskrcnn", download=False)


def test_unreachable_server_is_a_fatal_error_listing_the_url() -> None:
    url = "http://127.0.0.1:9/selfie.tflite"  # discard port: nothing listens
    with pytest.raises(FatalError, match="download failed") as err:
        store.resolve("selfie-test", manifest=selfie_manifest(url), progress=quiet)
    assert url in str(err.value)


def test_mirror_files_match_the_real_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVACYCAM_MODEL_MIRROR", str(SHARED / "models"))
    paths = store.resolve("selfie", download=False)
    assert paths["square"] == SELFIE / "selfie_segmentation.tflite"
    found = store.locate("maskrcnn")
    assert found["weights"] is None  # the real weights are not in the mirror
    for key in ("graph", "labels"):
        store.verify(found[key], REAL["maskrcnn"]["files"][key])


def test_corrupt_cached_file_is_a_fatal_error(isolated: Path) -> None:
    folder = isolated / "cache" / "privacycam" / "selfie-segmentation"
    folder.mkdir(parents=True)
    data = bytearray((SELFIE / "selfie_segmentation.tflite").read_bytes())
    data[1000] ^= 0xFF
    (folder / "selfie_segmentation.tflite").write_bytes(bytes(data))
    with pytest.raises(FatalError, match="expected 9ee168ec") as err:
        store.resolve("selfie", download=False)
    assert str(folder / "selfie_segmentation.tflite") in str(err.value)
    (folder / "selfie_segmentation.tflite").write_bytes(bytes(data[:1000]))
    with pytest.raises(FatalError, match="truncated"):
        store.resolve("selfie", download=False)


def test_user_model_dir_is_taken_as_is_but_must_be_complete(tmp_path: Path) -> None:
    user = tmp_path / "mine"
    user.mkdir()
    (user / "selfie_segmentation.tflite").write_bytes(b"my own export")
    with pytest.raises(FatalError, match="lacks selfie_segmentation_landscape.tflite"):
        store.resolve("selfie", user)
    (user / "selfie_segmentation_landscape.tflite").write_bytes(b"also mine")
    assert store.resolve("selfie", user)["square"] == user / "selfie_segmentation.tflite"


def test_cli_help_and_list(monkeypatch: pytest.MonkeyPatch) -> None:
    env = dict(os.environ, PRIVACYCAM_MODEL_MIRROR=str(SHARED / "models"))

    def models(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "models", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    out = models("--help")
    assert "fetch" in out.stdout and "list" in out.stdout
    out = models("list")
    assert str(SELFIE / "selfie_segmentation.tflite") in out.stdout
    env["PRIVACYCAM_NO_DOWNLOAD"] = "1"
    out = models("fetch", "maskrcnn", check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("models: error:")
