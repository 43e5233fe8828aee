"""The wire protocol: round trips, zero copy, and every kind of bad message is refused cleanly."""

import cv2
import msgpack
import numpy as np
import pytest

from common import protocol
from common.protocol import Control, End, Frame, Heartbeat, Mask, Output, Ready


def frame(h=36, w=64):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def wire(msg, **kw):
    """What a peer receives: the encoded parts as plain bytes."""
    return [bytes(p) for p in protocol.encode(msg, **kw)]


def test_raw_round_trip_keeps_pixels_and_fields():
    img = frame()
    msg = protocol.decode(wire(Frame(frame_id=7, ts=12.5, stream=3, index=2, image=img)))
    assert isinstance(msg, Frame)
    assert (msg.frame_id, msg.ts, msg.stream, msg.index) == (7, 12.5, 3, 2)
    assert msg.still is False and msg.fps == 30.0  # declared defaults
    np.testing.assert_array_equal(msg.image, img)


def test_every_kind_round_trips():
    img, mask = frame(), np.zeros((9, 16), np.uint8)
    for msg in (
        Mask(frame_id=1, stream=2, worker="w1", infer_ms=3.5, image=mask),
        Output(frame_id=1, ts=2.0, privacy=False, hidden="stale", mask_age_ms=12.0, image=img),
        Output(frame_id=1, ts=2.0, mask_age_ms=None, image=img),
        Ready(worker="w1", model="selfie"),
        Heartbeat(),
        Control(privacy="toggle"),
        End(stream=4, frame_id=99),
    ):
        back = protocol.decode(wire(msg))
        assert type(back) is type(msg) and back == msg  # images are not compared by ==


def test_raw_payload_is_not_copied_on_encode():
    img = frame()
    parts = protocol.encode(Frame(frame_id=0, ts=0.0, image=img))
    assert isinstance(parts[1], memoryview)
    img[0, 0, 0] ^= 0xFF  # the payload is a view of the same memory
    assert parts[1][0] == img[0, 0, 0]


def test_jpeg_and_png_round_trip():
    img = np.full((40, 60, 3), 128, np.uint8)
    jpeg = protocol.decode(wire(Frame(frame_id=1, ts=1.0, image=img), enc="jpeg"))
    assert jpeg.image.shape == img.shape and np.abs(jpeg.image.astype(int) - 128).max() < 4
    mask = (np.arange(40 * 60).reshape(40, 60) % 256).astype(np.uint8)
    png = protocol.decode(wire(Mask(frame_id=1, image=mask), enc="png"))
    np.testing.assert_array_equal(png.image, mask)


def test_expect_refuses_other_kinds_on_a_link():
    parts = wire(Control(privacy="off"))
    assert protocol.decode(parts, expect=(Control,)) == Control(privacy="off")
    with pytest.raises(protocol.ProtocolError, match="unexpected control"):
        protocol.decode(parts, expect=(Frame, End))


@pytest.mark.parametrize(
    "parts, reason",
    [
        ([b"\x00\xffgarbage"], "not msgpack"),
        ([msgpack.packb({"hello": 1})], "foreign"),
        ([msgpack.packb([1, 2, 3])], "foreign"),
        ([msgpack.packb({"p": "pcam", "v": 99, "kind": "frame"})], "version mismatch"),
        ([msgpack.packb({"p": "pcam", "v": protocol.VERSION, "kind": "bogus"})], "unknown"),
        ([msgpack.packb({"p": "pcam", "v": protocol.VERSION, "kind": "heartbeat"}), b"x"], "pay"),
        ([msgpack.packb({"p": "pcam", "v": protocol.VERSION, "pad": "y" * 9000})], "big"),
        ([b"a", b"b", b"c", b"d"], "parts"),
        ([], "parts"),
    ],
)
def test_bad_messages_raise_protocol_error(parts, reason):
    with pytest.raises(protocol.ProtocolError, match=reason):
        protocol.decode(parts)


def _header(kind="frame", **overrides):
    h = {"p": "pcam", "v": protocol.VERSION, "kind": kind, "frame_id": 1, "ts": 1.0}
    h.update(shape=[2, 2, 3] if kind != "mask" else [2, 2], dtype="uint8", enc="raw")
    h.update(overrides)
    return msgpack.packb(h)


@pytest.mark.parametrize(
    "header, payload, reason",
    [
        (_header(), b"\x00" * 11, "needs 12"),
        (_header(shape=[100000, 2, 3]), b"", "bad shape"),
        (_header(shape=[2, 2, 7]), b"\x00" * 28, "bad shape"),
        (_header(shape=[2, 2]), b"\x00" * 4, "bad shape"),  # a frame must be BGR
        (_header("mask", shape=[2, 2, 3]), b"\x00" * 12, "bad shape"),  # a mask is HxW
        (_header(shape="2x2"), b"", "bad shape"),
        (_header(shape=[2.0, 2, 3]), b"\x00" * 12, "bad shape"),
        (_header(dtype="float64"), b"\x00" * 96, "unsupported"),
        (_header(frame_id="x"), b"\x00" * 12, "frame_id"),
        (_header(frame_id=True), b"\x00" * 12, "frame_id"),
        (_header(frame_id=-1), b"\x00" * 12, "frame_id"),
        (_header(frame_id=2**64 - 1), b"\x00" * 12, "frame_id"),
        (_header(ts=float("inf")), b"\x00" * 12, "ts"),
        (_header(ts=float("nan")), b"\x00" * 12, "ts"),
        (_header(ts="now"), b"\x00" * 12, "ts"),
        (_header(still="yes"), b"\x00" * 12, "still"),
        (_header(fps=0), b"\x00" * 12, "fps"),
        (_header("mask", infer_ms="12"), b"\x00" * 4, "infer_ms"),
        (_header("mask", worker="x" * 100), b"\x00" * 4, "worker"),
        (_header("mask", worker=7), b"\x00" * 4, "worker"),
        (_header("output", hidden="because"), b"\x00" * 12, "hidden"),
        (_header("output", mask_age_ms="old"), b"\x00" * 12, "mask_age_ms"),
        (_header(enc="jpeg"), b"not a jpeg", "does not decode"),
        (_header(frame_id=None), b"\x00" * 12, "frame_id"),
    ],
)
def test_malformed_image_messages_are_refused(header, payload, reason):
    with pytest.raises(protocol.ProtocolError, match=reason):
        protocol.decode([header, payload])


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"privacy": False}, "privacy"),  # a bool was once accepted beside "toggle"
        ({"privacy": "maybe"}, "privacy"),
        ({}, "without 'privacy'"),
    ],
)
def test_control_fields_are_checked(fields, reason):
    h = {"p": "pcam", "v": protocol.VERSION, "kind": "control", **fields}
    with pytest.raises(protocol.ProtocolError, match=reason):
        protocol.decode([msgpack.packb(h)])


def test_image_kind_without_pixels_is_refused():
    with pytest.raises(protocol.ProtocolError, match="without pixels"):
        protocol.decode([_header()])


def test_png_bomb_is_refused_before_decoding():
    """A small PNG that declares a huge picture is refused from its IHDR, nothing is inflated."""
    ok, bomb = cv2.imencode(".png", np.zeros((4000, 4000), np.uint8))
    assert ok and len(bomb) < 100_000  # compresses to almost nothing
    with pytest.raises(protocol.ProtocolError, match=r"says \(4000, 4000\)"):
        protocol.decode([_header("mask", shape=[20, 20], enc="png"), bomb.tobytes()])


def test_jpeg_size_is_read_from_its_sof_marker():
    ok, jpg = cv2.imencode(".jpg", frame(30, 50))
    assert protocol.encoded_size(jpg.tobytes(), "jpeg") == (50, 30)
    ok, png = cv2.imencode(".png", frame(30, 50))
    assert protocol.encoded_size(png.tobytes(), "png") == (50, 30)
    assert protocol.encoded_size(b"\xff\xd8\xff\xe0garbage", "jpeg") is None
    with pytest.raises(protocol.ProtocolError, match="does not decode"):
        protocol.decode([_header(shape=[20, 20, 3], enc="jpeg"), jpg.tobytes()])


def test_output_carries_the_alpha_only_when_given_and_checks_it():
    image = np.zeros((6, 8, 3), np.uint8)
    alpha = np.arange(48, dtype=np.uint8).reshape(6, 8)
    plain = protocol.encode(protocol.Output(frame_id=1, ts=1.0, image=image))
    assert len(plain) == 2 and protocol.decode(plain).alpha is None
    parts = protocol.encode(protocol.Output(frame_id=1, ts=1.0, image=image, alpha=alpha))
    assert len(parts) == 3
    got = protocol.decode([bytes(p) for p in parts])
    assert np.array_equal(got.alpha, alpha) and got.image.shape == (6, 8, 3)
    # an alpha that does not match the picture, or lies about its size, is refused
    header = msgpack.unpackb(parts[0])
    for shape, payload in (([6, 9], bytes(54)), ([6, 8], bytes(47)), ([6, 8, 3], bytes(144))):
        bad = msgpack.packb({**header, "alpha_shape": shape})
        with pytest.raises(protocol.ProtocolError, match="alpha"):
            protocol.decode([bad, bytes(parts[1]), payload])
    # a third part on a kind without a second picture is refused
    frame = protocol.encode(protocol.Frame(frame_id=1, ts=1.0, image=image))
    with pytest.raises(protocol.ProtocolError, match="too many"):
        protocol.decode([*frame, bytes(48)])


def test_view_round_trip():
    parts = protocol.encode(protocol.View(mask=True))
    assert protocol.decode(parts, expect=(protocol.Control, protocol.View)) == protocol.View(True)
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(protocol.encode(protocol.Control(privacy="on")), expect=(protocol.View,))
