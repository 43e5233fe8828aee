"""The wire protocol: the one place that knows how messages look on the wire.

Every message is a ZeroMQ multipart ``[msgpack header, payload]`` (payload optional). The header
is a small msgpack map; the payload is raw pixels (sent zero-copy, ``copy=False``) or, for links to
remote workers, a JPEG/PNG encoding of them. Never pickle: a peer on the network must not be able to
run code in our process, and a foreign or future peer must be detected, not half-understood.

Header fields (all messages): ``p`` (magic, tells our messages from foreign ones), ``v`` (protocol
version), ``kind``. Image messages add ``frame_id``, ``ts`` (capture wall-clock time, seconds),
``shape``, ``dtype``, ``enc``, ``stream`` (random id of one capture run, so a restarted capture's
frame ids are not compared with the old ones). Stages add their own fields (``index``,
``privacy``...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import msgpack
import numpy as np

MAGIC = "pcam"
VERSION = 1

FRAME = "frame"  # capture -> compositor -> worker: a BGR picture to process
MASK = "mask"  # worker -> compositor: soft person mask (uint8 HxW) for one frame_id
OUTPUT = "output"  # compositor -> display: a composited picture
READY = "ready"  # worker -> compositor: "I am idle, send work" (also the worker's heartbeat)
HEARTBEAT = "heartbeat"  # compositor -> idle worker: "still here, no work yet"
CONTROL = "control"  # display -> compositor: privacy toggle and the like
END = "end"  # a file source finished: flows capture -> compositor -> display
KINDS = frozenset({FRAME, MASK, OUTPUT, READY, HEARTBEAT, CONTROL, END})
IMAGE_KINDS = frozenset({FRAME, MASK, OUTPUT})

ENCODINGS = ("raw", "jpeg", "png")
DTYPES = ("uint8",)
MAX_SIDE = 8192  # larger pictures are refused: protects memory against a hostile header


class ProtocolError(ValueError):
    """A message we must drop (malformed, foreign, wrong version); the text says which."""


@dataclass(frozen=True)
class Message:
    """A decoded message: the header map and, for image kinds, the picture (possibly read-only)."""

    header: dict[str, Any]
    image: np.ndarray | None = None

    @property
    def kind(self) -> str:
        return self.header["kind"]


def encode(
    kind: str,
    image: np.ndarray | None = None,
    *,
    enc: str = "raw",
    quality: int = 90,
    **fields: Any,
) -> list[Any]:
    """Build the multipart message for ``kind``; raw pixels are passed zero-copy (no tobytes)."""
    header: dict[str, Any] = {"p": MAGIC, "v": VERSION, "kind": kind, **fields}
    if image is None:
        return [msgpack.packb(header)]
    image = np.ascontiguousarray(image)
    header["shape"] = list(image.shape)
    header["dtype"] = str(image.dtype)
    header["enc"] = enc
    if enc == "raw":
        payload: Any = memoryview(image).cast("B")
    elif enc == "jpeg":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        payload = buf if ok else None
    elif enc == "png":
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        payload = buf if ok else None
    else:
        raise ValueError(f"unknown encoding {enc!r}")
    if payload is None:
        raise ValueError(f"could not {enc}-encode a {image.shape} picture")
    return [msgpack.packb(header), payload]


def _buffer(part: Any) -> memoryview:
    """The bytes of a part, whether it came from recv(copy=False) (a zmq.Frame) or as bytes."""
    buf = getattr(part, "buffer", None)
    return buf if buf is not None else memoryview(part)


def decode(parts: list[Any]) -> Message:
    """Parse and validate a multipart message; raises ProtocolError for anything not ours."""
    if not 1 <= len(parts) <= 2:
        raise ProtocolError(f"expected 1 or 2 parts, got {len(parts)}")
    try:
        header = msgpack.unpackb(bytes(_buffer(parts[0])), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for garbage
        raise ProtocolError(f"header is not msgpack ({type(exc).__name__})") from None
    if not isinstance(header, dict) or header.get("p") != MAGIC:
        raise ProtocolError("foreign message (no privacycam header)")
    if header.get("v") != VERSION:
        raise ProtocolError(
            f"protocol version mismatch: peer speaks v{header.get('v')}, this side v{VERSION} "
            "(run the same privacycam version on every machine)"
        )
    kind = header.get("kind")
    if kind not in KINDS:
        raise ProtocolError(f"unknown message kind {kind!r}")
    if kind not in IMAGE_KINDS:
        if len(parts) != 1:
            raise ProtocolError(f"{kind} message must not carry a payload")
        return Message(header)
    if len(parts) != 2:
        raise ProtocolError(f"{kind} message without pixels")
    for name in ("frame_id", "ts"):
        if not isinstance(header.get(name), (int, float)) or isinstance(header.get(name), bool):
            raise ProtocolError(f"{kind} message with bad {name!r}")
    shape, dtype, enc = header.get("shape"), header.get("dtype"), header.get("enc")
    if (
        not isinstance(shape, list)
        or len(shape) not in (2, 3)
        or not all(isinstance(s, int) and 0 < s <= MAX_SIDE for s in shape[:2])
        or (len(shape) == 3 and shape[2] not in (1, 3))
    ):
        raise ProtocolError(f"bad shape {shape!r}")
    if dtype not in DTYPES or enc not in ENCODINGS:
        raise ProtocolError(f"unsupported dtype/encoding {dtype!r}/{enc!r}")
    buf = _buffer(parts[1])
    if enc == "raw":
        expected = int(np.prod(shape))
        if buf.nbytes != expected:
            raise ProtocolError(f"payload is {buf.nbytes} bytes, shape {shape} needs {expected}")
        image = np.frombuffer(buf, dtype=np.uint8).reshape(shape)
    else:
        flag = cv2.IMREAD_GRAYSCALE if len(shape) == 2 else cv2.IMREAD_COLOR
        image = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), flag)
        if image is None or list(image.shape) != shape:
            raise ProtocolError(f"{enc} payload does not decode to shape {shape}")
    return Message(header, image)
