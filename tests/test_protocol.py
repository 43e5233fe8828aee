"""The wire protocol: round trips, zero copy, and every kind of bad message is refused cleanly."""

import msgpack
import numpy as np
import pytest

from common import protocol


def frame(h=36, w=64):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_raw_round_trip_keeps_pixels_and_fields():
    img = frame()
    parts = protocol.encode(protocol.FRAME, img, frame_id=7, ts=12.5, stream=3, index=2)
    msg = protocol.decode([bytes(p) for p in parts])
    assert msg.kind == protocol.FRAME
    assert msg.header["frame_id"] == 7 and msg.header["ts"] == 12.5 and msg.header["index"] == 2
    assert msg.header["v"] == protocol.VERSION and msg.header["shape"] == [36, 64, 3]
    np.testing.assert_array_equal(msg.image, img)


def test_raw_payload_is_not_copied_on_encode():
    img = frame()
    parts = protocol.encode(protocol.FRAME, img, frame_id=0, ts=0.0)
    assert isinstance(parts[1], memoryview)
    img[0, 0, 0] ^= 0xFF  # the payload is a view of the same memory
    assert parts[1][0] == img[0, 0, 0]


def test_jpeg_and_png_round_trip():
    img = np.full((40, 60, 3), 128, np.uint8)
    jpeg = protocol.decode(
        [bytes(p) for p in protocol.encode(protocol.FRAME, img, enc="jpeg", frame_id=1, ts=1.0)]
    )
    assert jpeg.image.shape == img.shape and np.abs(jpeg.image.astype(int) - 128).max() < 4
    mask = (np.arange(40 * 60).reshape(40, 60) % 256).astype(np.uint8)
    png = protocol.decode(
        [bytes(p) for p in protocol.encode(protocol.MASK, mask, enc="png", frame_id=1, ts=1.0)]
    )
    np.testing.assert_array_equal(png.image, mask)


@pytest.mark.parametrize(
    "parts, reason",
    [
        ([b"\x00\xffgarbage"], "not msgpack"),
        ([msgpack.packb({"hello": 1})], "foreign"),
        ([msgpack.packb([1, 2, 3])], "foreign"),
        ([msgpack.packb({"p": "pcam", "v": 99, "kind": "frame"})], "version mismatch"),
        ([msgpack.packb({"p": "pcam", "v": protocol.VERSION, "kind": "bogus"})], "unknown"),
        ([b"a", b"b", b"c"], "parts"),
        ([], "parts"),
    ],
)
def test_bad_messages_raise_protocol_error(parts, reason):
    with pytest.raises(protocol.ProtocolError, match=reason):
        protocol.decode(parts)


def _frame_header(**overrides):
    h = {
        "p": "pcam",
        "v": protocol.VERSION,
        "kind": "frame",
        "frame_id": 1,
        "ts": 1.0,
        "shape": [2, 2, 3],
        "dtype": "uint8",
        "enc": "raw",
    }
    h.update(overrides)
    return msgpack.packb(h)


@pytest.mark.parametrize(
    "header, payload, reason",
    [
        (_frame_header(), b"\x00" * 11, "needs 12"),
        (_frame_header(shape=[100000, 2, 3]), b"", "bad shape"),
        (_frame_header(shape=[2, 2, 7]), b"\x00" * 28, "bad shape"),
        (_frame_header(shape="2x2"), b"", "bad shape"),
        (_frame_header(dtype="float64"), b"\x00" * 96, "unsupported"),
        (_frame_header(frame_id="x"), b"\x00" * 12, "frame_id"),
        (_frame_header(enc="jpeg"), b"not a jpeg", "does not decode"),
    ],
)
def test_malformed_image_messages_are_refused(header, payload, reason):
    with pytest.raises(protocol.ProtocolError, match=reason):
        protocol.decode([header, payload])


def test_image_kind_without_pixels_is_refused():
    with pytest.raises(protocol.ProtocolError, match="without pixels"):
        protocol.decode([_frame_header()])
