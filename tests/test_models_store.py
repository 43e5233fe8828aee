"""Model store: lookup order, hash checks and downloads against a real HTTP server on 127.0.0.1.

Where a test serves the real model files from ../shared (and archives built from them) the hashes
checked are the manifest's real ones; those tests are marked ``needs_shared`` and skip one by one
without it. The others (offline messages, the CLI's fetch report, folders left behind) use small
made-up files and run anywhere.
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
from models import __main__ as cli
from models import store
from tests.conftest import REPO, SELFIE, SHARED, needs_shared

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
        # serve_forever checks for shutdown() every poll_interval: 0.5 s by default, per test.
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
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
    monkeypatch.setattr(store, "RETRY_WAIT_S", 0.0)
    return tmp_path


def selfie_manifest(url: str) -> dict:
    """The real selfie square entry, served directly (not from the wheel) at ``url``."""
    spec = dict(REAL["selfie"]["files"]["square"])
    spec.pop("archive")
    spec["url"] = url
    return {"selfie-test": {"folder": "selfie-test", "files": {"square": spec}}}


def made_up(url: str, data: bytes, name: str = "m.bin") -> dict:
    """A manifest file spec for ``data`` served at ``url`` (no ../shared needed)."""
    return {
        "name": name,
        "url": url,
        "hash": {"algo": "sha256", "hex": hashlib.sha256(data).hexdigest()},
        "size": len(data),
    }


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def quiet(name: str, done: int, total: int | None) -> None:
    pass


@needs_shared
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


@needs_shared
def test_dropped_connection_is_retried(server: Server, isolated: Path) -> None:
    server.routes["/m"] = (SELFIE / "selfie_segmentation.tflite").read_bytes()
    server.mode["/m"] = "drop-once"
    paths = store.resolve(
        "selfie-test", manifest=selfie_manifest(server.url + "/m"), progress=quiet
    )
    assert paths["square"].is_file() and server.hits == ["/m", "/m"]
    assert leftovers(paths["square"].parent) == []


@needs_shared
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
    # No partial file under any name, and not even the (empty) folders the download made.
    assert not (isolated / "cache").exists()
    server.mode["/m"] = "ok"
    assert store.resolve("selfie-test", manifest=manifest, progress=quiet)["square"].is_file()


@needs_shared
def test_interrupted_download_leaves_no_file(server: Server, isolated: Path) -> None:
    server.routes["/m"] = (SELFIE / "selfie_segmentation.tflite").read_bytes()

    def ctrl_c(name: str, done: int, total: int | None) -> None:
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.resolve("selfie-test", manifest=selfie_manifest(server.url + "/m"), progress=ctrl_c)
    assert not (isolated / "cache").exists()


@needs_shared
def test_wrong_bytes_are_rejected(server: Server, isolated: Path) -> None:
    server.routes["/m"] = (SELFIE / "selfie_segmentation_landscape.tflite").read_bytes()
    manifest = selfie_manifest(server.url + "/m")
    manifest["selfie-test"]["files"]["square"]["size"] = None  # let the hash be what catches it
    with pytest.raises(FatalError) as err:
        store.resolve("selfie-test", manifest=manifest, progress=quiet)
    want = REAL["selfie"]["files"]["square"]["hash"]["hex"]
    got = hashlib.sha256(server.routes["/m"]).hexdigest()
    assert want in str(err.value) and got in str(err.value)
    assert not (isolated / "cache").exists()


def test_http_404_is_a_fatal_error_and_leaves_no_folder(server: Server, isolated: Path) -> None:
    (isolated / "cache").mkdir()  # exists before: only what the download made is removed
    with pytest.raises(FatalError, match="404"):
        store.resolve("selfie-test", manifest=selfie_manifest(server.url + "/nope"), progress=quiet)
    assert list((isolated / "cache").iterdir()) == []


@needs_shared
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


@needs_shared
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
    size = REAL["selfie"]["files"]["square"]["size"]
    (folder / "selfie_segmentation.tflite").write_bytes(bytes(size))  # right size, wrong bytes
    with pytest.raises(FatalError, match="expected 9ee168ec") as err:
        store.resolve("selfie", download=False)
    assert str(folder / "selfie_segmentation.tflite") in str(err.value)
    (folder / "selfie_segmentation.tflite").write_bytes(bytes(1000))
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


def models_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``python -m models ARGS`` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "models", *args],
        cwd=REPO,
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_shared
def test_cli_list_shows_where_files_resolve() -> None:
    out = models_cli("list", env={"PRIVACYCAM_MODEL_MIRROR": str(SHARED / "models")})
    assert out.returncode == 0 and str(SELFIE / "selfie_segmentation.tflite") in out.stdout


def test_cli_fetch_offline_is_an_error_line_not_a_traceback(isolated: Path) -> None:
    out = models_cli(
        "fetch", "maskrcnn", env={"PRIVACYCAM_NO_DOWNLOAD": "1", "XDG_CACHE_HOME": str(isolated)}
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stdout.startswith("maskrcnn: failed: ") and out.stdout.count("\n") == 1
    assert out.stderr.startswith("models: error:")


def test_cli_help_shows_choices_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--help"], ["fetch", "--help"]):
        with pytest.raises(SystemExit) as done:
            cli.main(args)
        assert done.value.code == 0
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        assert "choices: maskrcnn, selfie" in text and "default: all of them" in text, args
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse may break a path at a "-"
    assert f"then{store.cache_root()}/<folder>/(theusercache" in text
    assert "PRIVACYCAM_MODEL_MIRROR" in text and "PRIVACYCAM_NO_DOWNLOAD" in text


def test_cli_fetch_tries_every_model_and_reports_each(
    server: Server, isolated: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """a: downloaded; b: 404 (does not stop c); c: already in the project folder."""
    data = {m: f"model {m} bytes".encode() * 100 for m in "abc"}
    manifest = {}
    for m in "abc":
        server.routes[f"/{m}"] = data[m]
        spec = made_up(server.url + f"/{m}", data[m])
        manifest[m] = {"folder": f"folder-{m}", "files": {"only": spec}}
    server.mode["/b"] = "404"
    (isolated / "project-files" / "folder-c").mkdir(parents=True)
    (isolated / "project-files" / "folder-c" / "m.bin").write_bytes(data["c"])
    monkeypatch.setattr(store, "load_manifest", lambda path=None: manifest)

    assert cli.main(["fetch"]) == 2
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split(":")[:2] for line in lines] == [
        ["a", " fetched"],
        ["b", " failed"],
        ["c", " already there"],
    ], out
    cache = isolated / "cache" / "privacycam"
    assert str(cache / "folder-a") in lines[0] and "m.bin" in lines[0]
    assert "404" in lines[1] and server.url + "/b" in lines[1]
    assert str(isolated / "project-files" / "folder-c") in lines[2]
    assert err.splitlines()[-1] == "models: error: 1 of 3 model(s) failed: b"
    assert sorted(p.name for p in cache.iterdir()) == ["folder-a"]  # no empty folder-b

    server.mode["/b"] = "ok"
    assert cli.main(["fetch"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[1] for line in lines] == [
        " already there",
        " fetched",
        " already there",
    ]
    assert (cache / "folder-b" / "m.bin").read_bytes() == data["b"]


def maskrcnn_offline_ways_out(message: str, selfie_state: str) -> None:
    assert "\n" not in message  # stages print a FatalError as one line
    assert "`--model selfie` (works offline when its files are there" in message
    assert selfie_state in message
    assert "`python -m models fetch maskrcnn`" in message


def test_missing_default_model_offline_names_both_ways_out(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message the worker raises when it opens the default model offline."""
    from inference.segmenter import open_segmenter

    monkeypatch.setenv("PRIVACYCAM_NO_DOWNLOAD", "1")
    with pytest.raises(FatalError) as err:
        open_segmenter("maskrcnn")
    maskrcnn_offline_ways_out(str(err.value), "they are not here either")
    assert "PRIVACYCAM_NO_DOWNLOAD unset" in str(err.value)
    selfie = isolated / "project-files" / "selfie-segmentation"
    selfie.mkdir(parents=True)
    for spec in REAL["selfie"]["files"].values():
        (selfie / spec["name"]).write_bytes(b"present")
    with pytest.raises(FatalError) as err:
        open_segmenter("maskrcnn")
    maskrcnn_offline_ways_out(str(err.value), "they are here")


def test_failed_download_of_default_model_names_both_ways_out(isolated: Path) -> None:
    manifest = json.loads(json.dumps(REAL))
    for spec in manifest["maskrcnn"]["files"].values():
        spec["url"] = "http://127.0.0.1:9/x"  # discard port: nothing listens
        if spec.get("archive"):
            spec["archive"]["url"] = "http://127.0.0.1:9/x.tar.gz"
    with pytest.raises(FatalError, match="download failed") as err:
        store.resolve("maskrcnn", manifest=manifest, progress=quiet)
    maskrcnn_offline_ways_out(str(err.value), "they are not here either")
    assert "NO_DOWNLOAD" not in str(err.value)
    assert not (isolated / "cache").exists()
