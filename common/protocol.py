"""The wire protocol: the one place that knows how messages look on the wire.

Every message is a ZeroMQ multipart ``[msgpack header, payload]`` (payload only for pictures). The
header is a small msgpack map; the payload is raw pixels (sent zero-copy, ``copy=False``) or, for
links to remote workers, a JPEG/PNG encoding of them. Never pickle: a peer on the network must not
be able to run code in our process, and a foreign or future peer must be detected, not
half-understood.

There is one frozen dataclass per message kind (``Frame``, ``Mask``, ``Output``, ``Ready``,
``Heartbeat``, ``Control``, ``End``). Its fields are the header fields, each with its type, range
and default declared once, here. ``decode`` checks *every* field of the kind, so a wrong type, a
value out of range, a NaN or an oversized string is a ``ProtocolError`` (the stage drops and counts
the message) and never an exception somewhere later in a stage. Stages read attributes, not dicts.

Envelope fields (all messages): ``p`` (magic: tells our messages from foreign ones), ``v``
(protocol version), ``kind``. Picture messages add ``shape``, ``dtype``, ``enc``. ``stream`` is a
random id of one capture run, so a restarted capture's frame ids are not compared with old ones.
"""

from __future__ import annotations

import math
import struct
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, ClassVar

import cv2
import msgpack
import numpy as np

MAGIC = "pcam"
VERSION = 2  # 2: typed messages; masks carry no capture time (the compositor keeps its own)

ENCODINGS = ("raw", "jpeg", "png")
MAX_SIDE = 8192  # larger pictures are refused: protects memory against a hostile header
MAX_ID = 2**63 - 1  # frame ids and stream ids are non-negative int64
MAX_TEXT = 64  # worker and model names
MAX_HEADER_BYTES = 4096  # a header is ~200 bytes; anything bigger is not ours
# A mask may be smaller than its frame (a model's own grid) but must have the frame's aspect:
# width/height within this share of the frame's (the rounding of small grids). Part of the wire
# contract: the worker sends a smaller grid only within it, the compositor refuses anything else.
MASK_ASPECT_TOLERANCE = 0.02


def same_aspect(
    a: tuple[int, ...], b: tuple[int, ...], tolerance: float = MASK_ASPECT_TOLERANCE
) -> bool:
    """Whether sizes ``a`` and ``b`` ((h, w, ...)) have the same aspect: a's width/height within
    ``tolerance`` (a share) of b's. The one check of the mask contract: the compositor refuses a
    mask that fails it, the worker sends a smaller grid only where it passes with a margin."""
    ra, rb = a[1] / a[0], b[1] / b[0]
    return abs(ra - rb) <= tolerance * rb


# Why a mask image is refused for a frame (the compositor counts refusals by these reasons).
MASK_TOO_LARGE = "mask_too_large"
MASK_ASPECT = "mask_aspect"


def mask_problem(
    mask_shape: tuple[int, ...],
    frame_shape: tuple[int, ...],
    tolerance: float = MASK_ASPECT_TOLERANCE,
) -> str:
    """Why a mask image cannot belong to a frame ("" if it can): it must have the frame's aspect
    (``same_aspect``) and at most the frame's size (a bigger one is wasted memory at best, an
    attack at worst). The compositor refuses such masks; the worker sends its smaller native
    grid only where it passes with a margin (half the ``tolerance``)."""
    mh, mw = mask_shape[:2]
    fh, fw = frame_shape[:2]
    if mh > fh or mw > fw:
        return MASK_TOO_LARGE
    if not same_aspect((mh, mw), (fh, fw), tolerance):
        return MASK_ASPECT
    return ""


class ProtocolError(ValueError):
    """A message we must drop (malformed, foreign, wrong version); the text says which."""


# --------------------------------------------------------------------------- field declarations


def _int(lo: int, hi: int, default: Any = MISSING) -> Any:
    return field(default=default, metadata={"type": int, "range": (lo, hi)})


def _float(lo: float, hi: float, default: Any = MISSING, optional: bool = False) -> Any:
    return field(default=default, metadata={"type": float, "range": (lo, hi), "optional": optional})


def _bool(default: Any = MISSING) -> Any:
    return field(default=default, metadata={"type": bool})


def _text(choices: tuple[str, ...] = (), default: Any = MISSING) -> Any:
    return field(default=default, metadata={"type": str, "choices": choices})


def _image(channels: int, extra: bool = False) -> Any:
    """The picture: HxWx3 BGR (channels 3) or HxW (channels 1), uint8; not a header field.

    ``extra``: an optional second picture of the same height and width (a third part, raw
    only, its shape in the header as ``<name>_shape``), e.g. the alpha beside an output picture.
    """
    meta = {"image": channels, "extra": extra}
    return field(default=None, repr=False, compare=False, metadata=meta)


@dataclass(frozen=True)
class Frame:
    """capture -> compositor -> worker: one BGR picture, numbered and stamped at capture."""

    KIND: ClassVar[str] = "frame"
    frame_id: int = _int(0, MAX_ID)
    ts: float = _float(0.0, 1e11)  # capture wall-clock time, seconds since the epoch
    stream: int = _int(0, MAX_ID, 0)
    index: int = _int(0, MAX_ID, 0)  # position in the source (file order for folders)
    still: bool = _bool(False)  # unrelated still pictures (a folder), not a moving camera
    fps: float = _float(0.01, 1000.0, 30.0)
    image: np.ndarray = _image(3)


@dataclass(frozen=True)
class Mask:
    """worker -> compositor: soft person mask (uint8 HxW, 0..255) for one frame it was handed.

    No capture time: the compositor takes it from its own record of the frame it handed out.
    """

    KIND: ClassVar[str] = "mask"
    frame_id: int = _int(0, MAX_ID)
    stream: int = _int(0, MAX_ID, 0)
    worker: str = _text(default="")
    infer_ms: float = _float(0.0, 3.6e6, 0.0)
    image: np.ndarray = _image(1)


@dataclass(frozen=True)
class Output:
    """compositor -> display: a composited picture and what the display needs to say about it."""

    KIND: ClassVar[str] = "output"
    frame_id: int = _int(0, MAX_ID)
    ts: float = _float(0.0, 1e11)
    stream: int = _int(0, MAX_ID, 0)
    index: int = _int(0, MAX_ID, 0)
    still: bool = _bool(False)
    fps: float = _float(0.01, 1000.0, 30.0)
    privacy: bool = _bool(True)
    fail_closed: bool = _bool(False)
    # why the picture is hidden: "" (it is not), "waiting" (no mask yet), "stale", "mismatch"
    hidden: str = _text(("", "waiting", "stale", "mismatch"), "")
    mask_age_ms: float | None = _float(0.0, 1e9, None, optional=True)
    mask_fps: float | None = _float(0.0, 1000.0, None, optional=True)  # masks applied per second
    image: np.ndarray = _image(3)
    # the alpha applied (uint8, 255 = person kept sharp): only while the display asked for it
    # (``View``), for the window's mask view; never part of what the call sees
    alpha: np.ndarray | None = _image(1, extra=True)


@dataclass(frozen=True)
class Ready:
    """worker -> compositor: "I am idle, send work" (also the worker's heartbeat)."""

    KIND: ClassVar[str] = "ready"
    worker: str = _text(default="")
    model: str = _text(default="")


@dataclass(frozen=True)
class Heartbeat:
    """compositor -> idle worker: "still here, no work yet"."""

    KIND: ClassVar[str] = "heartbeat"


@dataclass(frozen=True)
class Control:
    """display -> compositor: privacy "toggle", "on" or "off"."""

    KIND: ClassVar[str] = "control"
    privacy: str = _text(("toggle", "on", "off"))


@dataclass(frozen=True)
class View:
    """display -> compositor: send (or stop sending) the alpha with every picture (mask view)."""

    KIND: ClassVar[str] = "view"
    mask: bool = _bool()


@dataclass(frozen=True)
class End:
    """A file source finished: flows capture -> compositor -> display."""

    KIND: ClassVar[str] = "end"
    stream: int = _int(0, MAX_ID, 0)
    frame_id: int = _int(-1, MAX_ID, -1)  # the last frame sent (-1: none)


Message = Frame | Mask | Output | Ready | Heartbeat | Control | View | End
KINDS: dict[str, type] = {
    m.KIND: m for m in (Frame, Mask, Output, Ready, Heartbeat, Control, View, End)
}


def _image_channels(cls: type) -> int | None:
    for f in fields(cls):
        if "image" in f.metadata and not f.metadata["extra"]:
            return f.metadata["image"]
    return None


def _extra_image(cls: type) -> Any:
    """The field of the kind's optional second picture, or None."""
    return next((f for f in fields(cls) if f.metadata.get("extra")), None)


# --------------------------------------------------------------------------- encode


def encode(msg: Message, *, enc: str = "raw", quality: int = 90) -> list[Any]:
    """The multipart message for ``msg``; raw pixels are passed zero-copy (no tobytes)."""
    header: dict[str, Any] = {"p": MAGIC, "v": VERSION, "kind": msg.KIND}
    image = extra = None
    for f in fields(msg):
        if f.metadata.get("extra"):
            extra = getattr(msg, f.name)
            if extra is not None:
                extra = np.ascontiguousarray(extra)
                header[f"{f.name}_shape"] = list(extra.shape)
        elif "image" in f.metadata:
            image = getattr(msg, f.name)
        else:
            header[f.name] = getattr(msg, f.name)
    if _image_channels(type(msg)) is None:
        return [msgpack.packb(header)]
    if image is None:
        raise ValueError(f"a {msg.KIND} message needs its picture")
    image = np.ascontiguousarray(image)
    header.update(shape=list(image.shape), dtype=str(image.dtype), enc=enc)
    if extra is not None:
        if enc != "raw":
            raise ValueError("a second picture travels raw only")
        return [msgpack.packb(header), memoryview(image).cast("B"), memoryview(extra).cast("B")]
    if enc == "raw":
        return [msgpack.packb(header), memoryview(image).cast("B")]
    if enc == "jpeg":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif enc == "png":
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        raise ValueError(f"unknown encoding {enc!r}")
    if not ok:
        raise ValueError(f"could not {enc}-encode a {image.shape} picture")
    return [msgpack.packb(header), buf]


# --------------------------------------------------------------------------- decode


def _buffer(part: Any) -> memoryview:
    """The bytes of a part, whether it came from recv(copy=False) (a zmq.Frame) or as bytes."""
    buf = getattr(part, "buffer", None)
    return buf if buf is not None else memoryview(part)


def _check_field(kind: str, name: str, meta: dict, value: Any) -> None:
    """Raise ProtocolError unless ``value`` has the declared type and range."""
    want = meta["type"]
    if value is None and meta.get("optional"):
        return
    if want is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
    elif want is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, want)
    if not ok:
        raise ProtocolError(f"{kind} message with bad {name!r} (want {want.__name__})")
    if "range" in meta and not meta["range"][0] <= value <= meta["range"][1]:
        raise ProtocolError(f"{kind} message with {name!r} out of range")
    if want is str and (
        len(value) > MAX_TEXT or (meta["choices"] and value not in meta["choices"])
    ):
        raise ProtocolError(f"{kind} message with bad {name!r}")


def _header(parts: list[Any]) -> dict[str, Any]:
    if not 1 <= len(parts) <= 3:
        raise ProtocolError(f"expected 1 to 3 parts, got {len(parts)}")
    raw = _buffer(parts[0])
    if raw.nbytes > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {raw.nbytes} bytes is too big")
    try:
        header = msgpack.unpackb(bytes(raw), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for garbage
        raise ProtocolError(f"header is not msgpack ({type(exc).__name__})") from None
    if not isinstance(header, dict) or header.get("p") != MAGIC:
        raise ProtocolError("foreign message (no privacycam header)")
    if header.get("v") != VERSION:
        raise ProtocolError(
            f"protocol version mismatch: peer speaks v{header.get('v')}, this side v{VERSION} "
            "(run the same privacycam version on every machine)"
        )
    return header


def decode(parts: list[Any], expect: tuple[type, ...] | None = None) -> Message:
    """Parse and check a multipart message; raises ProtocolError for anything not ours.

    ``expect``: the message classes this link carries; any other kind is refused too.
    """
    header = _header(parts)
    cls = KINDS.get(header.get("kind"))  # type: ignore[arg-type]
    if cls is None:
        raise ProtocolError(f"unknown message kind {header.get('kind')!r}")
    if expect is not None and cls not in expect:
        raise ProtocolError(f"unexpected {cls.KIND} message on this link")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if "image" in f.metadata:
            continue
        if f.name in header:
            _check_field(cls.KIND, f.name, f.metadata, header[f.name])
            values[f.name] = header[f.name]
        elif f.default is MISSING:
            raise ProtocolError(f"{cls.KIND} message without {f.name!r}")
    channels = _image_channels(cls)
    if channels is None:
        if len(parts) != 1:
            raise ProtocolError(f"{cls.KIND} message must not carry a payload")
        return cls(**values)
    extra = _extra_image(cls)
    if len(parts) == 1 or (len(parts) == 3 and extra is None):
        raise ProtocolError(f"{cls.KIND} message without pixels, or with too many")
    values["image"] = image = _image_payload(cls.KIND, header, _buffer(parts[1]), channels)
    if len(parts) == 3:
        values[extra.name] = _extra_payload(cls.KIND, header, parts[2], extra, image.shape)
    return cls(**values)


def _extra_payload(kind: str, header: dict, part: Any, f: Any, shape: tuple) -> np.ndarray:
    """The second picture: raw, declared as ``<name>_shape``, the first picture's height and
    width (so it costs no more memory than the picture it comes with)."""
    want = [shape[0], shape[1]] + ([3] if f.metadata["image"] == 3 else [])
    if header.get(f"{f.name}_shape") != want:
        raise ProtocolError(f"{kind} message with a bad {f.name!r} shape")
    buf = _buffer(part)
    if buf.nbytes != int(np.prod(want)):
        raise ProtocolError(f"{kind} message: {f.name!r} is {buf.nbytes} bytes")
    return np.frombuffer(buf, dtype=np.uint8).reshape(want)


def _image_payload(kind: str, header: dict, buf: memoryview, channels: int) -> np.ndarray:
    shape, dtype, enc = header.get("shape"), header.get("dtype"), header.get("enc")
    want_ndim = 3 if channels == 3 else 2
    if (
        not isinstance(shape, list)
        or len(shape) != want_ndim
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape)
        or not all(0 < s <= MAX_SIDE for s in shape[:2])
        or (want_ndim == 3 and shape[2] != 3)
    ):
        raise ProtocolError(f"bad shape {shape!r} for a {kind} message")
    if dtype != "uint8" or enc not in ENCODINGS:
        raise ProtocolError(f"unsupported dtype/encoding {dtype!r}/{enc!r}")
    if enc == "raw":
        expected = int(np.prod(shape))
        if buf.nbytes != expected:
            raise ProtocolError(f"payload is {buf.nbytes} bytes, shape {shape} needs {expected}")
        return np.frombuffer(buf, dtype=np.uint8).reshape(shape)
    # Compressed: read the size the file itself declares *before* decoding, so a small bomb
    # (a PNG that inflates to 20000x20000) is refused without allocating anything.
    declared = encoded_size(bytes(buf[:65536]), enc)
    if declared != (shape[1], shape[0]):
        raise ProtocolError(f"{enc} payload does not decode to shape {shape} (says {declared})")
    flag = cv2.IMREAD_GRAYSCALE if want_ndim == 2 else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), flag)
    if image is None or list(image.shape) != shape:
        raise ProtocolError(f"{enc} payload does not decode to shape {shape}")
    return image


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def encoded_size(data: bytes, enc: str) -> tuple[int, int] | None:
    """(width, height) a PNG (IHDR) or JPEG (SOF marker) declares, or None if not readable.

    Why parse headers by hand: cv2.imdecode allocates the full picture before we could check it.
    """
    if enc == "png":
        if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
            return None
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    if enc == "jpeg":
        if data[:2] != b"\xff\xd8":
            return None
        i = 2
        while i + 9 <= len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in _SOF:
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return w, h
            (length,) = struct.unpack(">H", data[i + 2 : i + 4])
            i += 2 + length
    return None


def with_image(msg: Message, image: np.ndarray) -> Message:
    """A copy of a picture message with another picture (e.g. a frame re-sent to a worker)."""
    return replace(msg, image=image)  # type: ignore[type-var]
