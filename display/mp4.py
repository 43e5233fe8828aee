"""A recording that survives being cut: fragmented MP4 of JPEG pictures, written without buffering.

Why not ``cv2.VideoWriter(..., "mp4v")``: an ordinary MP4 keeps its index (``moov``) at the end,
written when the file is closed, so a display killed with ``kill -9`` left a file no player opens
("moov atom not found"). OpenCV's FFmpeg writer also holds up to 512 kB in memory (seconds of video
at a low bit rate) whatever the container. Here the index is written first (an empty ``moov`` with
``mvex``) and the pictures follow in fragments (``moof`` + ``mdat``), each a single ``os.write``
about every half second, so a cut file plays up to its last complete fragment. The durations in the
header are rewritten after every fragment, so even a cut file reports its length and frame count.

Pictures are Motion-JPEG (``jpeg`` sample entry), the one codec we can encode per frame without
FFmpeg's buffered writer; players built on FFmpeg (VLC, mpv, ffplay, OpenCV) and QuickTime play it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

FRAGMENT_S = 0.5  # at most this much (plus one frame) is lost when the process is killed
JPEG_QUALITY = 90
TICKS_PER_FRAME = 1000  # the track's timescale is fps * 1000: every frame lasts 1000 ticks
_IDENTITY = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def _sample_entry(width: int, height: int) -> bytes:
    name = b"Photo - JPEG"
    compressor = bytes([len(name)]) + name.ljust(31, b"\0")
    return box(
        b"jpeg",
        bytes(6) + struct.pack(">H", 1),  # reserved, data_reference_index
        bytes(16) + struct.pack(">HH", width, height),
        struct.pack(">III", 0x480000, 0x480000, 0) + struct.pack(">H", 1),
        compressor + struct.pack(">Hh", 24, -1),
    )


def header(width: int, height: int, timescale: int) -> bytes:
    """ftyp + moov for one video track with no samples yet (they come in fragments)."""
    empty = struct.pack(">I", 0)
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), _sample_entry(width, height)),
        full_box(b"stts", 0, 0, empty),
        full_box(b"stsc", 0, 0, empty),
        full_box(b"stsz", 0, 0, empty, empty),
        full_box(b"stco", 0, 0, empty),
    )
    minf = box(
        b"minf",
        full_box(b"vmhd", 0, 1, bytes(8)),
        box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1))),
        stbl,
    )
    mdia = box(
        b"mdia",
        full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, 0x55C4, 0)),
        full_box(b"hdlr", 0, 0, bytes(4), b"vide", bytes(12), b"VideoHandler\0"),
        minf,
    )
    tkhd = full_box(
        b"tkhd",
        0,
        3,  # enabled, in movie
        struct.pack(">IIIII", 0, 0, 1, 0, 0),
        bytes(8) + struct.pack(">hhhH", 0, 0, 0, 0),
        _IDENTITY,
        struct.pack(">II", width << 16, height << 16),
    )
    mvhd = full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIIIIH", 0, 0, timescale, 0, 0x10000, 0x100),
        bytes(10),
        _IDENTITY,
        bytes(24),
        struct.pack(">I", 2),
    )
    mvex = box(
        b"mvex",
        full_box(b"mehd", 0, 0, struct.pack(">I", 0)),
        full_box(b"trex", 0, 0, struct.pack(">IIIII", 1, 1, TICKS_PER_FRAME, 0, 0)),
    )
    ftyp = box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso6mp41")
    return ftyp + box(b"moov", mvhd, box(b"trak", tkhd, mdia), mvex)


def duration_offsets(head: bytes) -> list[int]:
    """Where the four 32-bit durations sit in ``header()`` (mvhd, tkhd, mdhd, mehd)."""
    # after the box type: version/flags 4, then creation 4, modification 4, (timescale | track 4)
    skip = {b"mvhd": 16, b"tkhd": 20, b"mdhd": 16, b"mehd": 4}
    return [head.index(kind) + 4 + n for kind, n in skip.items()]


def fragment(sequence: int, first_tick: int, samples: list[bytes]) -> bytes:
    """moof + mdat holding ``samples`` (JPEG bytes), each TICKS_PER_FRAME long."""
    trun_entries = b"".join(struct.pack(">II", TICKS_PER_FRAME, len(s)) for s in samples)

    def moof(data_offset: int) -> bytes:
        return box(
            b"moof",
            full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)),
            box(
                b"traf",
                full_box(b"tfhd", 0, 0x020000, struct.pack(">I", 1)),  # default-base-is-moof
                full_box(b"tfdt", 1, 0, struct.pack(">Q", first_tick)),
                # data offset, per-sample duration and size
                full_box(
                    b"trun", 0, 0x301, struct.pack(">Ii", len(samples), data_offset), trun_entries
                ),
            ),
        )

    size = len(moof(0))  # the data offset counts from the start of moof to the first sample
    return moof(size + 8) + box(b"mdat", *samples)


class FragmentedMp4:
    """Appends BGR pictures to a fragmented MP4; a fragment goes to disk every FRAGMENT_S."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        self.size = size
        self.timescale = max(1, round(fps * TICKS_PER_FRAME))
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        head = header(size[0], size[1], self.timescale)
        self.offsets = duration_offsets(head)
        self._write(head)
        self.pending: list[bytes] = []
        self.pending_since = 0.0
        self.frames = 0  # written to disk
        self.sequence = 0

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def add(self, image: np.ndarray, now: float) -> None:
        """Queue one picture (scaled to the first picture's size); flush when a fragment is due."""
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OSError("could not JPEG-encode a picture for the recording")
        if not self.pending:
            self.pending_since = now
        self.pending.append(jpeg.tobytes())
        self.flush_if_due(now)

    def flush_if_due(self, now: float) -> None:
        if self.pending and now - self.pending_since >= FRAGMENT_S:
            self.flush()

    def flush(self) -> None:
        """Write the pending pictures as one fragment, then the new durations in the header."""
        if not self.pending:
            return
        self.sequence += 1
        self._write(fragment(self.sequence, self.frames * TICKS_PER_FRAME, self.pending))
        self.frames += len(self.pending)
        self.pending = []
        duration = struct.pack(">I", min(self.frames * TICKS_PER_FRAME, 0xFFFFFFFF))
        for offset in self.offsets:
            os.pwrite(self.fd, duration, offset)

    def close(self) -> None:
        if self.fd < 0:
            return
        self.flush()
        os.close(self.fd)
        self.fd = -1
