"""Compiled per-pixel kernels of the compositor (numba), each a fused loop over a small grid or
over the edge band only.

Why compiled: the refinement's arithmetic is ~60 elementwise steps on a 160x90 grid plus a
gather / blend / scatter of the band pixels. In numpy every step is a separate call with its own
temporary and a pass over memory; on arrays this small the calls, not the arithmetic, are the
cost (2.9 ms per 640x360 frame at one thread, budget 1.5 ms). One compiled loop per step group
does the same arithmetic in a single pass (docs/compositing.md has the numbers). Box filters,
resizes and morphology stay in OpenCV, which is already one vectorised pass each.

Compiled on first use and cached on disk (``cache=True``), so a stage pays the compile once per
install (~3-4 s), later starts only load the machine code (~0.5 s, done before the compositor
takes frames: ``compose.warm_up``). The cache goes beside this file; where this folder is not
writable (an installed copy, another account), into a private folder of this account
(``private_cache_dir``): numba's cache is machine code that gets run, so it must never live
where another account could write it.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def private_cache_dir(tmp: Path, uid: int) -> Path:
    """A folder under ``tmp`` that only ``uid`` can write: ``privacycam-numba-<uid>`` when it is
    a real folder of ours that was never open to others (mode 0700), else a fresh one.

    Why so strict: numba's cache is machine code this process will run; anyone who could write
    the folder (or swap it for a symlink) could run code as the user."""
    path = tmp / f"privacycam-numba-{uid}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode) and info.st_uid == uid and not info.st_mode & 0o077:
            return path
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="privacycam-numba-", dir=tmp))  # fresh, 0700


def _choose_cache_dir() -> None:
    """Point numba's cache at a private folder, unless the folder beside this file is writable
    (numba's own first choice) or the user set ``NUMBA_CACHE_DIR``.

    Why here: numba reads the setting when it is imported, and without any writable place it
    refuses to define a cached function at all (a crash at start-up as, e.g., user nobody)."""
    here = Path(__file__).resolve().parent
    if "NUMBA_CACHE_DIR" in os.environ or os.access(here, os.W_OK):
        return
    os.environ["NUMBA_CACHE_DIR"] = str(private_cache_dir(Path(tempfile.gettempdir()), os.getuid()))


_choose_cache_dir()

import numba  # noqa: E402  (after the cache folder is chosen)
import numpy as np  # noqa: E402

_JIT = {"cache": True, "nogil": True, "fastmath": True, "error_model": "numpy"}


@numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")
def active_box(prob: np.ndarray, grow: int) -> tuple[int, int, int, int]:
    """The cells where the guided filter has work to do: the bounding box (y0, y1, x0, x1,
    ends exclusive) of every cell whose probability is not exactly 0 or 1, and of both cells of
    every step from 0 to 1 between neighbours, grown by ``grow`` and clipped to the grid;
    (0, 0, 0, 0) when there is none (the whole grid is 0, or 1).

    Why: a window holds two different values only if it holds one of those cells (walk from
    the one value to the other inside it), so outside that box the probability is one
    constant, 0 or 1, on each side, every window there is flat and the filter's answer is
    known, A = 0 and b = p (``_guided_coefficients`` says how far the box must grow). Not
    fastmath: a NaN must count as work, never as flat."""
    h, w = prob.shape
    y0, y1, x0, x1 = h, -1, w, -1
    for y in range(h):
        for x in range(w):
            p = prob[y, x]
            binary = p == 0.0 or p == 1.0
            right = down = False
            if binary and x + 1 < w:
                q = prob[y, x + 1]
                right = (q == 0.0 or q == 1.0) and q != p
            if binary and y + 1 < h:
                q = prob[y + 1, x]
                down = (q == 0.0 or q == 1.0) and q != p
            if not binary or right or down:
                y0, x0 = min(y0, y), min(x0, x)
                y1 = max(y1, y + 1 if down else y)
                x1 = max(x1, x + 1 if right else x)
    if y1 < 0:
        return 0, 0, 0, 0
    return max(y0 - grow, 0), min(y1 + 1 + grow, h), max(x0 - grow, 0), min(x1 + 1 + grow, w)


@numba.njit(**_JIT)
def flat_outside(prob: np.ndarray, crop: np.ndarray, y0: int, x0: int, coef: np.ndarray) -> None:
    """``coef`` (h, w, 4): the coefficients computed on a crop of the grid (``crop``, starting
    at cell (y0, x0)) where they are inside it, and the flat fit A = 0, b = p everywhere else."""
    h, w = prob.shape
    ch, cw = crop.shape[0], crop.shape[1]
    for y in range(h):
        inside_y = y0 <= y < y0 + ch
        for x in range(w):
            if inside_y and x0 <= x < x0 + cw:
                for c in range(4):
                    coef[y, x, c] = crop[y - y0, x - x0, c]
            else:
                coef[y, x, 0] = 0.0
                coef[y, x, 1] = 0.0
                coef[y, x, 2] = 0.0
                coef[y, x, 3] = prob[y, x]


@numba.njit(**_JIT)
def gf_stats(small: np.ndarray, prob: np.ndarray, y0: int, x0: int, st: np.ndarray) -> None:
    """The 13 values per cell the colour guided filter box-averages, interleaved in ``st``
    (h, w, 13) for the crop of the grid that starts at cell (y0, x0): I (B, G, R in 0..1), p,
    the 6 products I_u I_v, the 3 products I_u p.

    Interleaved, not 13 planes: a plane of the 160x90 grid with its padding is a multiple of
    4 KiB, so 13 planes written in one loop all fall into the same L1 cache sets and evict each
    other (measured 0.7 ms for this loop planar, ~20x its interleaved time)."""
    h, w = st.shape[0], st.shape[1]
    s = np.float32(1.0 / 255.0)
    for y in range(h):
        for x in range(w):
            b = np.float32(small[y0 + y, x0 + x, 0]) * s
            g = np.float32(small[y0 + y, x0 + x, 1]) * s
            r = np.float32(small[y0 + y, x0 + x, 2]) * s
            p = prob[y0 + y, x0 + x]
            st[y, x, 0] = b
            st[y, x, 1] = g
            st[y, x, 2] = r
            st[y, x, 3] = p
            st[y, x, 4] = b * b
            st[y, x, 5] = b * g
            st[y, x, 6] = b * r
            st[y, x, 7] = g * g
            st[y, x, 8] = g * r
            st[y, x, 9] = r * r
            st[y, x, 10] = b * p
            st[y, x, 11] = g * p
            st[y, x, 12] = r * p


@numba.njit(**_JIT)
def gf_solve(m: np.ndarray, ab: np.ndarray, eps: float) -> None:
    """Per cell, from the box means ``m`` (h, w, 13): A = (Sigma + eps I)^-1 cov(I, p) and
    b = mean(p) - A . mean(I), written into ``ab`` (h, w, 4) as (A_b, A_g, A_r, b).

    Sigma is symmetric, so its inverse is its adjugate (6 distinct cofactors) over the
    determinant: a closed form per cell instead of a linear solver call. Where the window's
    probability is flat (0 inside the room, 1 inside the person: cov(I, p) exactly 0, 82-85 %
    of the cells on a desk and a full-body clip) the fit is flat too, A = 0 and b = mean(p),
    with no solve: the loop's cost falls by ~60 % (the solved cells agree to float rounding)."""
    h, w, _ = m.shape
    eps = np.float32(eps)
    one = np.float32(1.0)
    for y in range(h):
        for x in range(w):
            mb, mg, mr, mp = m[y, x, 0], m[y, x, 1], m[y, x, 2], m[y, x, 3]
            vbb = m[y, x, 4] - mb * mb + eps
            vbg = m[y, x, 5] - mb * mg
            vbr = m[y, x, 6] - mb * mr
            vgg = m[y, x, 7] - mg * mg + eps
            vgr = m[y, x, 8] - mg * mr
            vrr = m[y, x, 9] - mr * mr + eps
            cb = m[y, x, 10] - mb * mp
            cg = m[y, x, 11] - mg * mp
            cr = m[y, x, 12] - mr * mp
            if cb == 0 and cg == 0 and cr == 0:  # p does not vary with colour here: A = 0
                ab[y, x, 0] = 0
                ab[y, x, 1] = 0
                ab[y, x, 2] = 0
                ab[y, x, 3] = mp
                continue
            c00 = vgg * vrr - vgr * vgr
            c01 = vbr * vgr - vbg * vrr
            c02 = vbg * vgr - vbr * vgg
            c11 = vbb * vrr - vbr * vbr
            c12 = vbr * vbg - vbb * vgr
            c22 = vbb * vgg - vbg * vbg
            inv = one / (vbb * c00 + vbg * c01 + vbr * c02)
            a0 = (c00 * cb + c01 * cg + c02 * cr) * inv
            a1 = (c01 * cb + c11 * cg + c12 * cr) * inv
            a2 = (c02 * cb + c12 * cg + c22 * cr) * inv
            ab[y, x, 0] = a0
            ab[y, x, 1] = a1
            ab[y, x, 2] = a2
            ab[y, x, 3] = mp - a0 * mb - a1 * mg - a2 * mr


@numba.njit(**_JIT)
def grid_classes(
    coef: np.ndarray,
    small: np.ndarray,
    margin: float,
    low: float,
    person: np.ndarray,
    unsure: np.ndarray,
    some_person: np.ndarray,
) -> None:
    """The filtered probability q = A . I + b on the grid, classified: ``person`` (q >= 0.5, 0/1),
    ``unsure`` (|q - 0.5| < margin, 0/1: a pixel's own colour can move it across the output
    smoothstep) and ``some_person`` (q >= low, 0/1: may hold person pixels). All C-contiguous.

    One flat float32 loop without branches (the compiler vectorises it): 15 us on the 160x90
    grid, where a 2-D float64 loop with a loop over the channels took 72."""
    cf = coef.reshape(-1)
    sm = small.reshape(-1)
    pf, uf, sf = person.reshape(-1), unsure.reshape(-1), some_person.reshape(-1)
    s = np.float32(1.0 / 255.0)
    half, mg, lo = np.float32(0.5), np.float32(margin), np.float32(low)
    for i in range(pf.size):
        lin = cf[4 * i] * np.float32(sm[3 * i]) + cf[4 * i + 1] * np.float32(sm[3 * i + 1])
        q = cf[4 * i + 3] + (lin + cf[4 * i + 2] * np.float32(sm[3 * i + 2])) * s
        pf[i] = q >= half
        uf[i] = abs(q - half) < mg
        sf[i] = q >= lo


def linear_positions(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Where ``cv2.resize(INTER_LINEAR)`` samples an axis of ``n_in`` px for ``n_out`` px: per
    output pixel the first source pixel of its pair (int64) and the fraction towards the next
    one (float64); pixel centres aligned, edges clamped (fraction 0 there). The tables of
    ``lerp_rows`` (``compose._linear_taps``) and ``warp_alpha`` (``motion._axis_table``) are
    made from it, so both sample where OpenCV would."""
    pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    first = np.floor(pos)
    frac = pos - first
    frac[(first < 0) | (first >= n_in - 1)] = 0.0
    return np.clip(first, 0, n_in - 1).astype(np.int64), frac


@numba.njit(**_JIT)
def _cell_offsets(k: int) -> tuple[np.ndarray, np.ndarray]:
    """For pixel d of a k-pixel cell: which neighbour cell (-1 or 0) starts its bilinear pair and
    the fraction towards the next one. Pixel d sits at (d + 0.5) / k - 0.5 cells from its cell's
    centre: the sample positions of ``cv2.resize(INTER_LINEAR)`` for an integer factor k.
    Fractions in float32, the arithmetic of ``paint_band``."""
    off = np.empty(k, np.int64)
    frac = np.empty(k, np.float32)
    for d in range(k):
        u = (d + 0.5) / k - 0.5
        if u < 0:
            off[d], frac[d] = -1, 1.0 + u
        else:
            off[d], frac[d] = 0, u
    return off, frac


@numba.njit(**_JIT)
def band_cells(band: np.ndarray, cells: np.ndarray) -> int:
    """The flat indices of the nonzero cells of the C-contiguous uint8 ``band`` into ``cells``
    (in order); returns how many. Zero 8-byte words are skipped whole: 2.5 us on the 160x90
    grid, where a loop testing every cell took ~30 (it does not vectorise)."""
    flat = band.reshape(-1)
    size = flat.size
    whole = size - size % 8
    words = flat[:whole].view(np.uint64)
    n = 0
    for w in range(words.size):
        if words[w] == 0:
            continue
        for i in range(8 * w, 8 * w + 8):
            if flat[i] != 0:
                cells[n] = i
                n += 1
    for i in range(whole, size):
        if flat[i] != 0:
            cells[n] = i
            n += 1
    return n


@numba.njit(**_JIT)
def paint_band(
    frame: np.ndarray,
    out: np.ndarray,
    alpha: np.ndarray,
    coef: np.ndarray,
    band: np.ndarray,
    k: int,
    low: float,
    high: float,
) -> None:
    """Per pixel of every band cell (``band`` nonzero; a cell is k x k pixels): the coefficients
    interpolated bilinearly from the grid (exactly ``cv2.resize(INTER_LINEAR)``, edge cells
    repeated), applied to the pixel's own colour, the smoothstep between ``low`` and ``high``
    as alpha, and the pixel blended over the background already in ``out`` (rounded as
    round(v / 255), with shifts: a division per channel would cost more than the rest).
    Most band pixels (~87 % on the juggling clip) come out fully person or fully background:
    those skip the blend (the same bytes; the band's cost -12 to -24 %). ``band`` is C-contiguous;
    its cells are listed first (``band_cells``)."""
    hs, ws, _ = coef.shape
    lo = np.float32(low * 255.0)
    scale = np.float32(1.0 / ((high - low) * 255.0))
    zero, half, one = np.float32(0.0), np.float32(0.5), np.float32(1.0)
    three, c255 = np.float32(3.0), np.float32(255.0)
    off, frac = _cell_offsets(k)
    col = np.empty((3, 4), np.float32)  # the neighbour columns' A and b, at a pixel row
    cells = np.empty(band.size, np.int32)
    for n in range(band_cells(band, cells)):
        cy, cx = divmod(cells[n], ws)
        for dy in range(k):
            y = cy * k + dy
            y0 = min(max(cy + off[dy], 0), hs - 1)
            y1 = min(max(cy + off[dy] + 1, 0), hs - 1)
            fy = frac[dy]
            for j in range(3):
                xx = min(max(cx - 1 + j, 0), ws - 1)
                for c in range(4):
                    top = coef[y0, xx, c]
                    col[j, c] = top + (coef[y1, xx, c] - top) * fy
            for dx in range(k):
                x = cx * k + dx
                j0 = 1 + off[dx]
                fx = frac[dx]
                p0, p1, p2 = frame[y, x, 0], frame[y, x, 1], frame[y, x, 2]
                q = (col[j0, 3] + (col[j0 + 1, 3] - col[j0, 3]) * fx) * c255
                q += (col[j0, 0] + (col[j0 + 1, 0] - col[j0, 0]) * fx) * p0
                q += (col[j0, 1] + (col[j0 + 1, 1] - col[j0, 1]) * fx) * p1
                q += (col[j0, 2] + (col[j0 + 1, 2] - col[j0, 2]) * fx) * p2
                t = min(max((q - lo) * scale, zero), one)
                a = int((three - t - t) * t * t * c255 + half)
                alpha[y, x] = a
                if a == 0:  # the background already in ``out``
                    continue
                if a == 255:  # the frame (the blend below gives exactly that)
                    out[y, x, 0] = frame[y, x, 0]
                    out[y, x, 1] = frame[y, x, 1]
                    out[y, x, 2] = frame[y, x, 2]
                    continue
                for c in range(3):
                    v = int(frame[y, x, c]) * a + int(out[y, x, c]) * (255 - a) + 128
                    out[y, x, c] = (v + (v >> 8)) >> 8


@numba.njit(**_JIT)
def premultiplied_down(
    small: np.ndarray, keep: np.ndarray, f: int, stack: np.ndarray, image: np.ndarray
) -> None:
    """Box-average the grid image down by the integer factor ``f`` twice: premultiplied by the
    background weight ``keep`` (uint8, nonzero: background) into ``stack`` (bh, bw, 4) = (sum of
    kept colours, kept share), and plainly into ``image`` (bh, bw, 3), the fallback where no
    background is near. A cell at the right/bottom edge averages the grid cells it has.

    Why together: a low-resolution cell that is part person must carry only its background
    pixels' colour, or the person's colour comes back as a halo around them."""
    h, w = keep.shape
    bh, bw = stack.shape[:2]
    for by in range(bh):
        for bx in range(bw):
            s0 = s1 = s2 = sw = 0.0
            i0 = i1 = i2 = 0.0
            n = 0
            for y in range(by * f, min((by + 1) * f, h)):
                for x in range(bx * f, min((bx + 1) * f, w)):
                    b, g, r = float(small[y, x, 0]), float(small[y, x, 1]), float(small[y, x, 2])
                    i0 += b
                    i1 += g
                    i2 += r
                    n += 1
                    if keep[y, x] != 0:
                        s0 += b
                        s1 += g
                        s2 += r
                        sw += 1.0
            inv = 1.0 / n
            stack[by, bx, 0] = s0 * inv
            stack[by, bx, 1] = s1 * inv
            stack[by, bx, 2] = s2 * inv
            stack[by, bx, 3] = sw * inv
            image[by, bx, 0] = i0 * inv
            image[by, bx, 1] = i1 * inv
            image[by, bx, 2] = i2 * inv


@numba.njit(**_JIT)
def box_down4(src: np.ndarray, dst: np.ndarray) -> None:
    """Mean of every 4x4 block of the C-contiguous uint8 BGR ``src`` into ``dst`` (H // 4,
    W // 4, 3), rounded once.

    Why: the frame on the grid at 640 px (the guided filter's guide and the background's
    source) is its 4x4 mean; two ``cv2.resize`` halvings take ~0.20 ms a frame, this pass
    ~0.13 (its main loop sums four rows over contiguous bytes, which vectorises). The halvings
    round twice, so the two can differ by one level."""
    h, w, _ = dst.shape
    width = w * 12
    row = np.empty(width, np.uint16)
    for y in range(h):
        r0 = src[4 * y].reshape(-1)
        r1 = src[4 * y + 1].reshape(-1)
        r2 = src[4 * y + 2].reshape(-1)
        r3 = src[4 * y + 3].reshape(-1)
        for i in range(width):
            row[i] = np.uint16(r0[i]) + np.uint16(r1[i]) + np.uint16(r2[i]) + np.uint16(r3[i])
        out = dst[y].reshape(-1)
        for x in range(w):
            for c in range(3):
                j = 12 * x + c
                t = row[j] + row[j + 3] + row[j + 6] + row[j + 9] + np.uint16(8)
                out[3 * x + c] = np.uint8(t >> np.uint16(4))


@numba.njit(**_JIT)
def lerp_rows(src: np.ndarray, first: np.ndarray, weight: np.ndarray, out: np.ndarray) -> None:
    """Linear interpolation between rows: ``out[y]`` = blend of ``src[first[y]]`` and the next
    row (clamped) with that one's ``weight[y]`` in 1/256; uint8 (h, n) -> (H, n), 16-bit
    integer arithmetic, rounded.

    Why rows: every output row is one weight over two contiguous source rows, a loop the
    compiler can vectorise. ``compose._upsample_into`` does the bilinear
    enlargement of the blurred background as two of these passes, the first on the transposed
    picture. ``cv2.resize``'s horizontal pass is slow for 3-channel uint8 (0.09-0.12 ms for 30
    rows of 640 px) and its vertical pass reads 32-bit rows: alone 2-3x slower than these two
    passes in the host's slow phase; the whole render x0.81-0.87 at 1280x720 in either phase,
    and at 640x360 only in the slow one (docs/compositing.md)."""
    h = src.shape[0]
    rows, n = out.shape
    for y in range(rows):
        a = src[first[y]]
        b = src[min(first[y] + 1, h - 1)]
        w1 = np.uint16(weight[y])
        w0 = np.uint16(256 - weight[y])
        o = out[y]
        for i in range(n):
            v = np.uint16(a[i]) * w0 + np.uint16(b[i]) * w1 + np.uint16(128)
            o[i] = np.uint8(v >> np.uint16(8))


@numba.njit(**_JIT)
def normalise(blurred: np.ndarray, image: np.ndarray, tiny: float, out: np.ndarray) -> None:
    """out = (blur(I w) + tiny I) / (blur(w) + tiny), rounded to uint8: the halo-free blur, and
    where no background weight is near, the plain image (no division by zero)."""
    h, w = out.shape[:2]
    for y in range(h):
        for x in range(w):
            inv = 1.0 / (blurred[y, x, 3] + tiny)
            for c in range(3):
                v = (blurred[y, x, c] + tiny * image[y, x, c]) * inv
                out[y, x, c] = min(max(int(v + 0.5), 0), 255)


# --------------------------------------------------------------------------- motion compensation
# compositor/motion.py's change rule at flow resolution (160x90) and the alpha's warp. In
# numpy/OpenCV they were ~25 calls with a temporary each (the map minus the identity, magnitudes,
# comparisons, a 320x180 map resize and scaling, a nearest resize and boolean indexing of the
# hidden pixels). Fused: ~7 % of the compensation's cost per frame (bench/motion_lab.py --cost,
# docs/motion.md). The gathers themselves (the map advancing, the mask frame and, where the
# alpha has the flow's size, the alpha seen through the map) are cv2.remap's: a compiled bilinear
# gather costs ~10 ns a pixel here, 3-6x OpenCV's vectorised one. ``warp_alpha`` remains for an
# alpha of another size than the flow (e.g. 1920x1080: flow 120x67, alpha 160x90); its sampling
# is exact bilinear, and every coordinate, even a NaN, is clamped before it becomes an index, so
# it reads an edge pixel (BORDER_REPLICATE), never outside the array.


@numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")
def _clamped(v: float, n: int) -> tuple[int, int, float]:
    """Bilinear pair and fraction for coordinate ``v`` on an axis of ``n`` pixels, edges
    repeated. Not fastmath: a NaN or infinite coordinate is clamped here before it becomes an
    index (fastmath may assume there are none)."""
    if not v >= -1.0:
        v = -1.0
    if not v <= n:
        v = float(n)
    f = np.floor(v)
    i = int(f)
    return min(max(i, 0), n - 1), min(max(i + 1, 0), n - 1), v - f


@numba.njit(**_JIT)
def rule_inputs(
    sampled: np.ndarray,
    st: np.ndarray,
    res: np.ndarray,
    thr: float,
    path: bool,
    unexplained: float,
    small_alpha: np.ndarray,
    motion: np.ndarray,
) -> int:
    """Per pixel, for the change rule: the warped alpha (``sampled``'s first channel) and the
    motion (net displacement |map(x) - x| of the state ``st``, or with ``path`` the larger of it
    and the path length; ``unexplained`` where the occlusion check failed). Returns the number
    of residuals (``res``, ``hold_residuals``) above ``thr``. Elementwise, no gather."""
    h, w = res.shape
    bad = 0
    for y in range(h):
        for x in range(w):
            small_alpha[y, x] = sampled[y, x, 0]
            if res[y, x] > thr:
                bad += 1
            dx = st[y, x, 0] - x
            dy = st[y, x, 1] - y
            m = np.sqrt(dx * dx + dy * dy)
            acc = st[y, x, 2]
            if path:
                m = max(m, acc)
            elif acc >= unexplained:
                m = unexplained
            motion[y, x] = m
    return bad


@numba.njit(**_JIT)
def hold_residuals(
    sampled: np.ndarray,
    ref: np.ndarray,
    cur: np.ndarray,
    gains: np.ndarray,
    res: np.ndarray,
    diff: np.ndarray,
) -> None:
    """Per pixel, the change rule's residual of this frame (``cur``, (h, w, n): blurred grey, or
    blurred B, G, R) against the mask frame seen through the map (``sampled``: its alpha, then
    the n channels compared; ``cv2.remap`` did the gather) into ``res``: the largest change of
    any channel, the mask frame's channel c scaled by ``gains[c]`` (the camera's exposure
    change, ``exposure_gains``). And how much larger the same residual against the mask frame
    in place (``ref``, same layout) is, into ``diff`` (negative: in place explains this frame
    better; what ``motion._hold_still`` compares). One pass for both, no gather."""
    h, w = res.shape
    n = cur.shape[2]
    if n == 3:
        _hold_residuals_bgr(sampled, ref, cur, gains, res, diff)
        return
    for y in range(h):
        for x in range(w):
            a = 0.0
            b = 0.0
            for c in range(n):
                v = cur[y, x, c]
                a = max(a, abs(v - gains[c] * sampled[y, x, 1 + c]))
                b = max(b, abs(v - gains[c] * ref[y, x, 1 + c]))
            res[y, x] = a
            diff[y, x] = b - a


@numba.njit(**_JIT)
def _hold_residuals_bgr(
    sampled: np.ndarray,
    ref: np.ndarray,
    cur: np.ndarray,
    gains: np.ndarray,
    res: np.ndarray,
    diff: np.ndarray,
) -> None:
    """``hold_residuals`` for three channels, written out: the same numbers at half the time
    (0.05 vs 0.11 ms at 160x90). Why a twin and not one loop: with each residual one max of
    three terms the pixel loop vectorises; a loop over the channels does not, even with their
    count a compile-time constant (a kernel made for n = 3 by a closure: 0.10 ms)."""
    h, w = res.shape
    g0, g1, g2 = gains[0], gains[1], gains[2]
    for y in range(h):
        s, r, c, o, d = sampled[y], ref[y], cur[y], res[y], diff[y]
        for x in range(w):
            v0, v1, v2 = c[x, 0], c[x, 1], c[x, 2]
            a = max(abs(v0 - g0 * s[x, 1]), abs(v1 - g1 * s[x, 2]), abs(v2 - g2 * s[x, 3]))
            b = max(abs(v0 - g0 * r[x, 1]), abs(v1 - g1 * r[x, 2]), abs(v2 - g2 * r[x, 3]))
            o[x] = a
            d[x] = b - a


@numba.njit(**_JIT)
def hold_in_place(
    pick: np.ndarray,
    ref: np.ndarray,
    sampled: np.ndarray,
    ident: np.ndarray,
    xy: np.ndarray,
    res: np.ndarray,
    diff: np.ndarray,
) -> None:
    """Where ``pick`` (non-zero, see ``motion._hold_still``): what was sampled through the map
    becomes the mask frame in place (``ref``), the map the identity (``ident``) and the residual
    the one in place (``res + diff``). One pass; ``np.copyto`` with a broadcast ``where`` took
    ~5x longer per array at 160x90."""
    h, w = pick.shape
    n = ref.shape[2]
    for y in range(h):
        for x in range(w):
            if pick[y, x]:
                for c in range(n):
                    sampled[y, x, c] = ref[y, x, c]
                xy[y, x, 0] = ident[y, x, 0]
                xy[y, x, 1] = ident[y, x, 1]
                res[y, x] += diff[y, x]


@numba.njit(**_JIT)
def exposure_gains(
    sampled: np.ndarray, cur: np.ndarray, max_alpha: float, lo: float, hi: float,
    hist: np.ndarray, gains: np.ndarray,
) -> int:  # fmt: skip
    """Per channel, the median ratio this frame / mask frame (``cur`` (h, w, n) vs ``sampled``'s
    channels after its alpha, as ``hold_residuals`` compares them) over every second pixel of
    every second row whose carried alpha is at most ``max_alpha`` and whose two values both lie
    in [lo, hi] (not dark noise, not clipped), into ``gains``: a histogram (``hist``: (n, bins))
    of the ratio in [0.5, 2], bins of equal width. Returns how many pixels counted.

    Why a quarter of the pixels: both pictures are blurred, neighbours say nearly the same, and
    the median of ~3,600 is as good as of 14,400; the loop is a quarter as long."""
    n = cur.shape[2]
    bins = hist.shape[1]
    per = bins / 1.5
    hist[:] = 0
    if n == 3:
        count = _exposure_hist_bgr(sampled, cur, max_alpha, lo, hi, hist, per)
    else:
        count = _exposure_hist(sampled, cur, max_alpha, lo, hi, hist, per)
    for c in range(n):
        gains[c] = 1.0
        seen = 0
        for i in range(bins):
            seen += hist[c, i]
            if 2 * seen >= count and count > 0:
                gains[c] = 0.5 + (i + 0.5) / per
                break
    return count


@numba.njit(**_JIT)
def _exposure_hist(
    sampled: np.ndarray, cur: np.ndarray, max_alpha: float, lo: float, hi: float,
    hist: np.ndarray, per: float,
) -> int:  # fmt: skip
    """``exposure_gains``' histogram for any number of channels; returns the pixels counted."""
    h, w, n = cur.shape
    top = hist.shape[1] - 1
    count = 0
    for y in range(0, h, 2):
        for x in range(0, w, 2):
            if sampled[y, x, 0] > max_alpha:
                continue
            ok = True
            for c in range(n):
                a = sampled[y, x, 1 + c]
                b = cur[y, x, c]
                ok = ok and lo <= a <= hi and lo <= b <= hi
            if not ok:
                continue
            count += 1
            for c in range(n):
                i = int((cur[y, x, c] / sampled[y, x, 1 + c] - 0.5) * per)
                hist[c, min(max(i, 0), top)] += 1
    return count


@numba.njit(**_JIT)
def _exposure_hist_bgr(
    sampled: np.ndarray, cur: np.ndarray, max_alpha: float, lo: float, hi: float,
    hist: np.ndarray, per: float,
) -> int:  # fmt: skip
    """``_exposure_hist`` for three channels, written out: the same counts in ~60 % of the time
    (0.035 vs 0.058 ms at 160x90), the channel loops unrolled."""
    h, w, _ = cur.shape
    top = hist.shape[1] - 1
    count = 0
    for y in range(0, h, 2):
        s, c = sampled[y], cur[y]
        for x in range(0, w, 2):
            if s[x, 0] > max_alpha:
                continue
            a0, a1, a2 = s[x, 1], s[x, 2], s[x, 3]
            b0, b1, b2 = c[x, 0], c[x, 1], c[x, 2]
            if min(a0, a1, a2, b0, b1, b2) < lo or max(a0, a1, a2, b0, b1, b2) > hi:
                continue
            count += 1
            hist[0, min(max(int((b0 / a0 - 0.5) * per), 0), top)] += 1
            hist[1, min(max(int((b1 / a1 - 0.5) * per), 0), top)] += 1
            hist[2, min(max(int((b2 / a2 - 0.5) * per), 0), top)] += 1
    return count


@numba.njit(**_JIT)
def hide_candidates(
    res: np.ndarray,
    thr: float,
    small_alpha: np.ndarray,
    min_alpha: float,
    band: bool,
    dist: np.ndarray,
    reach: np.ndarray,
    margin: float,
    calm_thr: float,
    out: np.ndarray,
    calm: np.ndarray,
) -> int:
    """The change rule's pixels (uint8 ``out``): residual above ``thr`` where the warped alpha
    is above ``min_alpha`` and, with ``band``, the distance to the mask's edge ``dist`` is within
    ``reach`` (the nearby motion, uint8 flow px) + ``margin``. ``calm``: the pixels the grown
    ring may leave visible (residual <= ``calm_thr`` or outside the band, and person there).
    Returns how many pixels ``out`` holds."""
    h, w = res.shape
    n = 0
    for y in range(h):
        for x in range(w):
            in_band = (not band) or dist[y, x] <= reach[y, x] + margin
            r = res[y, x]
            a = small_alpha[y, x]
            hit = r > thr and a > min_alpha and in_band
            out[y, x] = 1 if hit else 0
            n += 1 if hit else 0
            calm[y, x] = 1 if (r <= calm_thr or not in_band) and a >= 0.5 else 0
    return n


@numba.njit(**_JIT)
def warp_alpha(
    alpha: np.ndarray,
    st: np.ndarray,
    col: np.ndarray,
    row: np.ndarray,
    hidden: np.ndarray,
    out: np.ndarray,
) -> int:
    """The mask's ``alpha`` seen through the map ``st`` (flow res), resampled once at the
    alpha's size; pixels whose flow pixel is ``hidden`` (uint8, (0, 0): none) are 0.

    ``col``/``row`` (one row per output column/row): the map's bilinear pair and fraction as
    ``cv2.resize(INTER_LINEAR)`` samples it, the nearest flow pixel (as INTER_NEAREST), and the
    scale from flow px to alpha px. Returns how many pixels the hiding turned from some person
    to none."""
    ah, aw = out.shape
    has_hidden = hidden.shape[0] > 0
    n = 0
    for ya in range(ah):
        fy0 = int(row[ya, 0])
        fy1 = int(row[ya, 1])
        fy = row[ya, 2]
        hy = int(row[ya, 3])
        sy = row[ya, 4]
        for xa in range(aw):
            fx0 = int(col[xa, 0])
            fx1 = int(col[xa, 1])
            fx = col[xa, 2]
            top = st[fy0, fx0, 0] + (st[fy0, fx1, 0] - st[fy0, fx0, 0]) * fx
            bot = st[fy1, fx0, 0] + (st[fy1, fx1, 0] - st[fy1, fx0, 0]) * fx
            mx = top + (bot - top) * fy
            top = st[fy0, fx0, 1] + (st[fy0, fx1, 1] - st[fy0, fx0, 1]) * fx
            bot = st[fy1, fx0, 1] + (st[fy1, fx1, 1] - st[fy1, fx0, 1]) * fx
            my = top + (bot - top) * fy
            x0, x1, bx = _clamped((mx + 0.5) * col[xa, 4] - 0.5, aw)
            y0, y1, by = _clamped((my + 0.5) * sy - 0.5, ah)
            t = alpha[y0, x0] + (alpha[y0, x1] - alpha[y0, x0]) * bx
            b = alpha[y1, x0] + (alpha[y1, x1] - alpha[y1, x0]) * bx
            a = t + (b - t) * by
            if has_hidden and hidden[hy, int(col[xa, 3])] != 0:
                if a > 0:
                    n += 1
                a = 0.0
            out[ya, xa] = a
    return n


@numba.njit(**_JIT)
def colour_lookup(img: np.ndarray, table: np.ndarray, bins: int, out: np.ndarray) -> None:
    """Per pixel of a 3-channel uint8 picture: ``table`` at its cell of a ``bins``^3 grid. One
    pass; numpy's index arithmetic was five passes over int32 copies (~0.3 ms at 160x90)."""
    h, w = out.shape
    for y in range(h):
        for x in range(w):
            q0 = np.int64(img[y, x, 0]) * bins >> 8
            q1 = np.int64(img[y, x, 1]) * bins >> 8
            q2 = np.int64(img[y, x, 2]) * bins >> 8
            out[y, x] = table[(q0 * bins + q1) * bins + q2]
