"""The model store: find a model's files locally, or fetch them once, and never run a wrong file.

Why this exists: the weights are tens of megabytes, come from third-party URLs and are not in the
repo. A half-downloaded or swapped file makes OpenCV fail with an unreadable protobuf error deep in
a worker process, so every file we did not get from the user is hash-checked against
``models/manifest.json`` and downloads are atomic (a temp file in the same folder, fsync,
``os.replace``), so an interrupted download never leaves a file under its final name.

Lookup order for each file of a model (first hit wins):

1. ``model_dir`` given by the user: taken as is, by file name, no hash check (a user may run their
   own export, and the random-weights stand-in lives in such a folder).
2. The project folder ``models/files/<folder>/`` and the user cache
   ``$XDG_CACHE_HOME/privacycam/<folder>/`` (default ``~/.cache/privacycam``).
3. The offline mirror ``$PRIVACYCAM_MODEL_MIRROR/<folder>/<file>``.
4. Download from the official URL into the user cache (unless ``download=False`` or
   ``PRIVACYCAM_NO_DOWNLOAD=1``).

Hashing is not cached: sha1/sha256 of the 64 MB Mask R-CNN graph takes ~65 ms here, small next to
the ~0.3-0.5 s OpenCV needs to parse it, so a size+mtime cache would only add a way to be wrong.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.errors import FatalError

MANIFEST_PATH = Path(__file__).with_name("manifest.json")
PROJECT_FILES = Path(__file__).with_name("files")
MIRROR_ENV = "PRIVACYCAM_MODEL_MIRROR"
NO_DOWNLOAD_ENV = "PRIVACYCAM_NO_DOWNLOAD"
TIMEOUT_S = 30.0  # per connect and per read: a stalled server fails instead of hanging start-up
ATTEMPTS = 3  # a dropped connection is retried; a wrong hash is not (it would be wrong again)
RETRY_WAIT_S = 0.5  # wait before retry n is n * this (tests set it to 0)
CHUNK = 1 << 16

Progress = Callable[[str, int, int | None], None]


class _Retryable(Exception):
    """A network failure worth another attempt (drop, timeout, short body)."""


def load_manifest(path: Path = MANIFEST_PATH) -> dict:
    """The parsed manifest: ``{model: {"folder": str, "files": {key: spec}}}``."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def cache_root() -> Path:
    """The user cache, ``$XDG_CACHE_HOME/privacycam`` or ``~/.cache/privacycam``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "privacycam"


def search_dirs(folder: str) -> list[Path]:
    """Where already-present files are looked for, in order (steps 2 and 3 of the lookup)."""
    dirs = [PROJECT_FILES / folder, cache_root() / folder]
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        dirs.append(Path(mirror) / folder)
    return dirs


def file_digest(path: Path, algo: str) -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, spec: dict) -> None:
    """Raise ``FatalError`` unless ``path`` has the manifest's hash (and size, when known)."""
    algo, want = spec["hash"]["algo"], spec["hash"]["hex"].lower()
    size = path.stat().st_size
    if spec.get("size") is not None and size != spec["size"]:
        raise FatalError(
            f"model file {path} is {size} bytes, expected {spec['size']} "
            f"(truncated or wrong file); "
            f"delete it and run `python -m models fetch` or put the right file there"
        )
    got = file_digest(path, algo)
    if got != want:
        raise FatalError(
            f"model file {path} has {algo} {got}, expected {want} (corrupt or wrong file); "
            f"delete it and run `python -m models fetch` or put the right file there"
        )


def _model(manifest: dict, model: str) -> dict:
    if model not in manifest:
        known = ", ".join(sorted(manifest))
        raise FatalError(f"unknown model {model!r}; the manifest has: {known}")
    return manifest[model]


def locate(model: str, model_dir: Path | None = None, manifest: dict | None = None) -> dict:
    """Where each file of ``model`` is right now, without checking or downloading.

    Returns ``{key: Path | None}``; used by ``python -m models list`` and by ``resolve``.
    """
    entry = _model(manifest or load_manifest(), model)
    found: dict[str, Path | None] = {}
    for key, spec in entry["files"].items():
        dirs = [Path(model_dir)] if model_dir is not None else search_dirs(entry["folder"])
        found[key] = next((d / spec["name"] for d in dirs if (d / spec["name"]).is_file()), None)
    return found


# The way out when a model is missing offline: another model that needs no download, when there is
# one. The default Mask R-CNN (64 MB, from the TensorFlow model zoo) is the one usually missing; the
# selfie model's two small files are often already at hand (mirror, project folder, cache).
OFFLINE_ALTERNATIVE = {"maskrcnn": "selfie"}


def _ways_out(model: str, manifest: dict) -> str:
    """The things a user can do right now, one clause: use another model, or fetch this one."""
    fetch = f"run `python -m models fetch {model}` where the network is allowed"
    if os.environ.get(NO_DOWNLOAD_ENV, "") not in ("", "0"):
        fetch += f" (with {NO_DOWNLOAD_ENV} unset)"
    other = OFFLINE_ALTERNATIVE.get(model)
    if other is None or other not in manifest:
        return f"to fix: {fetch}"
    there = all(p is not None for p in locate(other, None, manifest).values())
    state = "they are here" if there else "they are not here either"
    return (
        f"two ways out: run with `--model {other}` (works offline when its files are there; "
        f"{state}), or {fetch}"
    )


def _missing_message(model: str, manifest: dict, missing: list[str], reason: str) -> str:
    """One line (stages print a ``FatalError`` as one line): ways out first, then the details."""
    entry = manifest[model]
    files = entry["files"]
    wanted = []
    for key in missing:
        spec = files[key]
        src = spec.get("archive")
        where = f"{src['url']} (member {src['member']})" if src else spec["url"]
        wanted.append(f"{spec['name']} from {where}")
    dirs = ", ".join(str(d) for d in search_dirs(entry["folder"]))
    return (
        f"model {model!r}: {reason}; {_ways_out(model, manifest)}; "
        f"missing file(s): {'; '.join(wanted)}; "
        f"or put them in one of: {dirs}; or in ${MIRROR_ENV}/{entry['folder']}/; "
        f"or pass the folder holding them with --model-dir"
    )


def resolve(
    model: str,
    model_dir: Path | None = None,
    *,
    download: bool = True,
    progress: Progress | None = None,
    manifest: dict | None = None,
) -> dict[str, Path]:
    """Paths of every file of ``model`` (manifest key -> path), fetching what is missing.

    ``model_dir`` given: files are taken from it by name, unchecked; a missing required file is a
    ``FatalError`` listing what is expected. Otherwise files found in the project folder, user cache
    or mirror are hash-checked, and missing ones downloaded into the user cache (``download`` and
    no ``PRIVACYCAM_NO_DOWNLOAD=1``), else one ``FatalError`` lists files, URLs and folders.
    ``progress(name, done_bytes, total_bytes|None)`` defaults to a bar on stderr.
    """
    manifest = manifest or load_manifest()
    entry = _model(manifest, model)
    files = entry["files"]
    found = locate(model, model_dir, manifest)
    if model_dir is not None:
        missing = [k for k, p in found.items() if p is None and not files[k].get("optional")]
        if missing:
            names = ", ".join(files[k]["name"] for k in missing)
            raise FatalError(
                f"model dir {model_dir} lacks {names} for model {model!r} "
                f"(expected there: {', '.join(s['name'] for s in files.values())})"
            )
        return {k: p for k, p in found.items() if p is not None}
    for key, path in found.items():
        if path is not None:
            verify(path, files[key])
    missing = [k for k, p in found.items() if p is None]
    if missing:
        if not download or os.environ.get(NO_DOWNLOAD_ENV, "") not in ("", "0"):
            reason = "not found, downloads disabled"
            raise FatalError(_missing_message(model, manifest, missing, reason))
        dest_dir = cache_root() / entry["folder"]
        try:
            found.update(fetch_files(files, missing, dest_dir, progress or stderr_progress))
        except (_Retryable, FatalError) as e:
            # Whatever went wrong (network, HTTP error, wrong bytes), say what to do instead.
            reason = "download failed ({})".format(" ".join(str(e).split()))
            raise FatalError(_missing_message(model, manifest, missing, reason)) from e
    return {k: p for k, p in found.items() if p is not None}


def fetch_files(
    files: dict, keys: list[str], dest_dir: Path, progress: Progress | None = None
) -> dict[str, Path]:
    """Download ``keys`` of a manifest ``files`` table into ``dest_dir``; each archive only once.

    Folders this call creates are removed again if it fails and they are still empty, so a failed
    fetch leaves nothing behind (not even an empty cache folder).
    """
    created = _make_dirs(dest_dir)
    try:
        return _fetch_into(files, keys, dest_dir, progress)
    except BaseException:  # KeyboardInterrupt too: the folders are ours to clean either way
        _remove_empty(created)
        raise


def _make_dirs(path: Path) -> list[Path]:
    """``mkdir -p path``; returns the folders that did not exist before, deepest first."""
    created = []
    p = path
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    return created


def _remove_empty(dirs: list[Path]) -> None:
    """Remove ``dirs`` (deepest first) while they are empty; stop at the first that is not."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:  # not empty (another fetch is using it) or already gone: leave it
            return


def _fetch_into(
    files: dict, keys: list[str], dest_dir: Path, progress: Progress | None
) -> dict[str, Path]:
    out: dict[str, Path] = {}
    by_archive: dict[str, list[str]] = {}
    for key in keys:
        spec = files[key]
        if spec.get("archive"):
            by_archive.setdefault(spec["archive"]["url"], []).append(key)
        else:
            out[key] = download(spec["url"], dest_dir / spec["name"], spec, progress)
    for url, members in by_archive.items():
        arch = files[members[0]]["archive"]
        tmp_archive = download(url, dest_dir / f".archive-{Path(url).name}", arch, progress)
        try:
            for key in members:
                spec = files[key]
                data = read_member(tmp_archive, spec["archive"]["member"])
                out[key] = write_atomic(dest_dir / spec["name"], data, spec)
        finally:
            tmp_archive.unlink(missing_ok=True)
    return out


@dataclass(frozen=True)
class FetchReport:
    """What ``fetch_model`` did for one model: ``status`` is fetched, already there or failed."""

    model: str
    status: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def line(self) -> str:
        """One line for ``python -m models fetch``."""
        return f"{self.model}: {self.status}: {self.detail}"


def fetch_model(
    model: str, manifest: dict | None = None, progress: Progress | None = None
) -> FetchReport:
    """Make every file of ``model`` present and checked; report instead of raising.

    A ``FatalError`` (missing offline, download failed, corrupt file) becomes a failed report with
    its one-line message, so ``python -m models fetch`` can go on with the next model.
    """
    manifest = manifest or load_manifest()
    try:
        before = locate(model, None, manifest)
        paths = resolve(model, manifest=manifest, progress=progress)
    except FatalError as e:
        return FetchReport(model, "failed", " ".join(str(e).split()))
    new = sorted(paths[k].name for k, p in before.items() if p is None and k in paths)
    where = ", ".join(sorted({str(p.parent) for p in paths.values()}))
    if new:
        return FetchReport(model, "fetched", f"{', '.join(new)} into {where}")
    return FetchReport(model, "already there", f"{len(paths)} file(s) checked in {where}")


def read_member(archive: Path, member: str) -> bytes:
    """Bytes of one member of a .tar.gz or zip (.whl) archive."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                return z.read(member)
        with tarfile.open(archive, "r:*") as t:
            f = t.extractfile(member)
            if f is None:
                raise KeyError(member)
            return f.read()
    except (KeyError, tarfile.TarError, zipfile.BadZipFile) as e:
        raise FatalError(f"archive {archive} has no readable member {member} ({e})") from e


def write_atomic(dest: Path, data: bytes, spec: dict) -> Path:
    """Write ``data`` to ``dest`` (temp file, fsync, ``os.replace``) after checking its hash."""
    algo, want = spec["hash"]["algo"], spec["hash"]["hex"].lower()
    got = hashlib.new(algo, data).hexdigest()
    if got != want:
        raise FatalError(f"{dest.name}: {algo} {got}, expected {want} (wrong file in the archive)")
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def download(url: str, dest: Path, spec: dict, progress: Progress | None = None) -> Path:
    """Fetch ``url`` to ``dest`` atomically and hash-checked, retrying dropped connections.

    Raises ``FatalError`` on a hash mismatch or a non-retryable HTTP error, ``_Retryable`` (turned
    into a ``FatalError`` listing what to do by ``resolve``) when every attempt failed.
    """
    last: Exception | None = None
    for attempt in range(ATTEMPTS):
        try:
            return _download_once(url, dest, spec, progress)
        except _Retryable as e:
            last = e
            if attempt + 1 < ATTEMPTS:
                time.sleep(RETRY_WAIT_S * (attempt + 1))
    raise _Retryable(f"{url}: {last} after {ATTEMPTS} attempts")


def _download_once(url: str, dest: Path, spec: dict, progress: Progress | None) -> Path:
    algo, want = spec["hash"]["algo"], spec["hash"]["hex"].lower()
    h = hashlib.new(algo)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
                    total = resp.headers.get("Content-Length")
                    total = int(total) if total is not None else None
                    done = 0
                    while block := resp.read(CHUNK):
                        f.write(block)
                        h.update(block)
                        done += len(block)
                        if progress:
                            progress(dest.name, done, total)
            except urllib.error.HTTPError as e:
                if e.code >= 500 or e.code == 429:
                    raise _Retryable(f"HTTP {e.code}") from e
                raise FatalError(f"download of {url} failed: HTTP {e.code} {e.reason}") from e
            except (urllib.error.URLError, OSError, EOFError, ValueError) as e:
                # ValueError: http.client raises it for some malformed chunked bodies.
                raise _Retryable(str(getattr(e, "reason", e)) or type(e).__name__) from e
            if total is not None and done != total:
                raise _Retryable(f"connection dropped after {done} of {total} bytes")
            f.flush()
            os.fsync(f.fileno())
        got = h.hexdigest()
        if got != want:
            raise FatalError(
                f"download of {url} has {algo} {got}, expected {want} "
                f"(the server sent a different file); nothing was saved"
            )
        os.replace(tmp, dest)
        return dest
    finally:
        Path(tmp).unlink(missing_ok=True)
        if progress:
            progress(dest.name, -1, None)  # -1: finished (bar ends its line)


_BAR_LAST: dict[str, float] = {}  # file name -> time of the last redraw


def stderr_progress(name: str, done: int, total: int | None) -> None:
    """A one-line progress bar on stderr, redrawn at most 5 times a second."""
    now = time.monotonic()
    if done < 0:
        if _BAR_LAST.pop(name, None) is not None:
            sys.stderr.write("\n")
        return
    if now - _BAR_LAST.get(name, 0.0) < 0.2 and done != total:
        return
    _BAR_LAST[name] = now
    mb = done / 1e6
    if total:
        frac = done / total
        bar = "#" * int(frac * 30)
        line = f"\r{name}: [{bar:<30}] {mb:7.1f}/{total / 1e6:.1f} MB {frac:4.0%}"
    else:
        line = f"\r{name}: {mb:7.1f} MB"
    sys.stderr.write(line)
    sys.stderr.flush()


def describe(manifest: dict | None = None) -> str:
    """A human-readable table of where each model file resolves now (for ``models list``)."""
    manifest = manifest or load_manifest()
    out = io.StringIO()
    for model, entry in manifest.items():
        out.write(f"{model} ({entry['folder']}): {entry.get('description', '')}\n")
        for key, path in locate(model, None, manifest).items():
            name = entry["files"][key]["name"]
            out.write(f"  {key:10s} {name:48s} {path if path else 'MISSING (would download)'}\n")
    out.write(
        f"searched: models/files/<folder>, {cache_root()}/<folder>, "
        f"${MIRROR_ENV}={os.environ.get(MIRROR_ENV, '(unset)')}\n"
    )
    return out.getvalue()
