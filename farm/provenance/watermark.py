"""An invisible watermark in every frame: a 64-bit code derived from the shot id, readable back after
our own H.264 encode, a re-encode at CRF 28 and a resize (e.g. to 720p).

The scheme is the DWT-DCT one of invisible-watermark's `dwtDct` (quantisation index modulation of
DCT coefficients of 4x4 blocks of a low-pass band of the luma), made independent of the frame size:

- the low-pass band is the frame's luma averaged over a grid of cells (64 on the short side; the
  long side in proportion, a multiple of 4). That is the LL band of a Haar DWT, taken at a size
  fixed by the grid rather than by the frame, so a resized copy of the frame has the same band;
- each 4x4 block of cells carries bits in three low DCT coefficients, each moved to the nearest
  point of the lattice of its bit (QIM, step STEP, with a fixed pseudo-random dither per slot);
- the change is made at full resolution as the smallest change of the luma whose cell averages are
  the wanted ones (a minimum-norm solution, so no pixel moves more than it must), added equally to
  R, G and B (which changes the luma only), then made again on what clipping at 0 and 255 left;
- the 80-bit payload (64-bit code + CRC-16) is protected by a rate-1/3 convolutional code
  (constraint length 7, the generators 133, 171, 165 of LTE), whose 258 bits are repeated over all
  slots, interleaved by a fixed permutation; it is read back by averaging the soft decision of every
  copy of a coded bit and decoding them with the Viterbi algorithm. Measured on the demo: at CRF 28
  a fifth to a quarter of the slots come back wrong (x264 predicts most of a frame from its
  neighbours and re-quantises what it codes), which repetition alone does not survive and this
  code does.

Why not a library: invisible-watermark (imwatermark) declares opencv-python as a dependency, which
would overwrite the cv2 of opencv-contrib-python that mediapipe needs (both install cv2/); its
`dwtDct` also reads back at one size only. TrustMark needs model weights fetched at run time. This
is numpy and scipy's DCT only, which the farm already depends on.

The code is public and so is the key (the dither and permutation seed): anyone can read the mark,
which is what a machine-readable AI label is for (EU AI Act Art. 50(2)); it identifies the shot
through the farm's records, it does not authenticate it (the C2PA signature does).
"""
from __future__ import annotations

import functools
import hashlib
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import sparse
from scipy.fft import dctn, idctn

SCHEME = "farm-dwtdct-qim/1"
CODE_BITS = 64
_CRC_BITS = 16
_PAYLOAD_BITS = CODE_BITS + _CRC_BITS
_GENERATORS = (0o133, 0o171, 0o165)  # rate 1/3, constraint length 7
_MEMORY = 6
_CODED_BITS = (_PAYLOAD_BITS + _MEMORY) * len(_GENERATORS)  # the payload, then zeros that end in state 0
SHORT_CELLS = 64  # cells of the low-pass grid on the frame's short side
# Frames with a shorter side than this are left unmarked: cells under 2 px are detail that no encoder
# keeps, so the mark would cost quality and not survive.
MIN_SIDE = 2 * SHORT_CELLS
_BLOCK = 4
_COEFFICIENTS = ((0, 1), (1, 0), (1, 1))  # DCT coefficients of a 4x4 block that carry bits
STEP = 16.0  # QIM step, in the units of the orthonormal DCT of cell means (0..255 luma): PSNR about 42 dB
_PASSES = 3  # embedding passes: each makes good what clipping at 0 and 255 undid
_SEED = 0x6D66_776D  # the public key: dither and interleaving
_BT709 = np.array([0.2126, 0.7152, 0.0722])
_BT709_ROW = _BT709.astype(np.float32)[None, :]  # cv2.transform: one output channel


def watermark_code(shot_id: str) -> int:
    """The 64-bit code a shot's frames carry (the farm records the mapping in the shot's manifest)."""
    return int.from_bytes(hashlib.sha256(f"motion-farm watermark:{shot_id}".encode()).digest()[:8], "big")


def code_hex(code: int) -> str:
    return f"{code:016x}"


def embed(frame: np.ndarray, code: int) -> np.ndarray:
    """The frame with the code in it: (H, W, 3) uint8 RGB in and out. Deterministic: the same
    frame gets the same pixels in any process and with any number of threads (no BLAS)."""
    height, width = frame.shape[:2]
    layout = _layout(*grid_shape(height, width))
    bits = _convolve(_payload_bits(code))[layout.bit_of_slot]
    marked = frame.astype(np.float32)
    for _ in range(_PASSES):
        dct = _block_dct(_cells(luma(marked), layout))
        coefficients = dct[layout.slot_index]
        change = np.zeros_like(dct)
        change[layout.slot_index] = _quantise(coefficients, bits, layout.dither) - coefficients
        residual = np.ascontiguousarray(_spread(_block_idct(change), height, width), dtype=np.float32)
        # Element-wise, in OpenCV (several times numpy's speed on a channel broadcast): the same
        # sums, clipped to 0..255.
        cv2.add(marked, cv2.merge([residual, residual, residual]), dst=marked)
        flat = marked.reshape(height, width * 3)  # one channel: a scalar bound applies to every value
        cv2.min(cv2.max(flat, 0.0, dst=flat), 255.0, dst=flat)
    return cv2.convertScaleAbs(marked)  # rounded half to even, as np.rint, the values being in 0..255


def read_code(luma_plane: np.ndarray) -> int | None:
    """The code one frame carries on its own (see read_video), None when none passes its CRC."""
    for soft in _soft_by_grid(luma_plane).values():
        code = _decode_payload(soft)
        if code is not None:
            return code
    return None


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.709 luma of (H, W, 3) RGB, full range, as the farm's encoder computes it (float32 for
    float32 or integer input)."""
    return cv2.transform(rgb.astype(np.float32, copy=False), _BT709_ROW)


def grid_shape(height: int, width: int) -> tuple[int, int]:
    """The low-pass grid of a frame: SHORT_CELLS on the short side, the long side in proportion
    (a multiple of the block size)."""
    if height <= width:
        return SHORT_CELLS, _long_side(width / height)
    return _long_side(height / width), SHORT_CELLS


@dataclass(frozen=True)
class Reading:
    """What the frames of a video say. code: the code read from all frames together (the soft
    decisions of every frame summed, so a mark that no single frame carries intact after heavy
    compression still reads), None when there is none; frames: frames read; agreeing: frames that
    read that code on their own."""

    code: int | None
    frames: int
    agreeing: int

    @property
    def found(self) -> bool:
        return self.code is not None

    @property
    def rate(self) -> float:
        return self.agreeing / self.frames if self.frames else 0.0

    def to_dict(self) -> dict:
        return {"code": None if self.code is None else code_hex(self.code), "frames": self.frames,
                "frames_carrying_it": self.agreeing, "found": self.found}


def read_video(lumas: Iterable[np.ndarray]) -> Reading:
    """The code a video's frames carry (luma planes, 0..255 full range, of one size). A payload
    passes its CRC-16 by chance once in 65536 reads, so an unmarked video reads as marked about
    once in 20000 (three grids are tried)."""
    totals: dict[tuple[int, int], np.ndarray] = {}
    per_frame: Counter[int] = Counter()
    frames = 0
    for plane in lumas:
        frames += 1
        found = None
        for grid, soft in _soft_by_grid(plane).items():
            totals[grid] = totals.get(grid, 0.0) + soft
            if found is None:
                found = _decode_payload(soft)
        if found is not None:
            per_frame[found] += 1
    for total in totals.values():
        code = _decode_payload(total)
        if code is not None:
            return Reading(code, frames, per_frame[code])
    return Reading(None, frames, 0)


def _soft_by_grid(plane: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """The soft decisions of the coded bits on each grid the frame may carry (see _candidate_grids)."""
    found = {}
    for rows, cols in _candidate_grids(*plane.shape):
        layout = _layout(rows, cols)
        found[(rows, cols)] = _soft_bits(_block_dct(_cells(plane, layout))[layout.slot_index], layout)
    return found


# The payload ---------------------------------------------------------------------------------------


def _payload_bits(code: int) -> np.ndarray:
    """(80,) 0/1: the code, then the low 16 bits of its CRC-32."""
    data = code.to_bytes(8, "big")
    crc = zlib.crc32(data) & 0xFFFF
    word = (code << _CRC_BITS) | crc
    return np.array([(word >> (_PAYLOAD_BITS - 1 - i)) & 1 for i in range(_PAYLOAD_BITS)], np.uint8)


def _decode_payload(soft: np.ndarray) -> int | None:
    """(258,) soft decisions of the coded bits (positive: 0, negative: 1) -> the code, or None when
    the decoded payload fails its CRC."""
    bits = _viterbi(soft)
    word = 0
    for bit in bits:
        word = (word << 1) | int(bit)
    code, crc = word >> _CRC_BITS, word & 0xFFFF
    return code if zlib.crc32(code.to_bytes(8, "big")) & 0xFFFF == crc else None


def _trellis() -> tuple[np.ndarray, np.ndarray]:
    """outputs[state, bit]: the coded bits (0/1, one per generator) when `bit` enters the encoder in
    `state` (the last 6 bits, newest lowest); the next state is ((state << 1) | bit) & 63."""
    outputs = np.zeros((1 << _MEMORY, 2, len(_GENERATORS)), np.uint8)
    for state in range(1 << _MEMORY):
        for bit in (0, 1):
            register = (state << 1) | bit
            outputs[state, bit] = [bin(register & g).count("1") & 1 for g in _GENERATORS]
    return outputs, np.arange(1 << _MEMORY)


_OUTPUTS, _STATES = _trellis()


def _convolve(bits: np.ndarray) -> np.ndarray:
    """(n,) 0/1 -> ((n + 6) * 3,) coded bits, the encoder ending in state 0."""
    state, coded = 0, []
    for bit in [*bits.tolist(), *[0] * _MEMORY]:
        coded.extend(_OUTPUTS[state, bit])
        state = ((state << 1) | bit) & ((1 << _MEMORY) - 1)
    return np.array(coded, np.uint8)


def _viterbi(soft: np.ndarray) -> np.ndarray:
    """The most likely payload bits given the soft values of the coded bits (positive: 0)."""
    steps = len(soft) // len(_GENERATORS)
    received = soft.reshape(steps, len(_GENERATORS))
    signs = 1.0 - 2.0 * _OUTPUTS  # (64, 2, 3): +1 for a coded 0
    metric = np.full(1 << _MEMORY, -np.inf)
    metric[0] = 0.0
    # The two states that lead to each state: its high bit (the oldest) was 0 or 1 before the shift.
    previous = np.stack([_STATES >> 1, (_STATES >> 1) | (1 << (_MEMORY - 1))], axis=1)  # (64, 2)
    entering = _STATES & 1  # the bit that enters on the way to each state
    choices = np.zeros((steps, 1 << _MEMORY), np.uint8)
    for t in range(steps):
        branch = signs @ received[t]  # (64, 2): agreement of each transition with what was read
        candidates = metric[previous] + branch[previous, entering[:, None]]
        choices[t] = np.argmax(candidates, axis=1)
        metric = candidates[_STATES, choices[t]]
    state, bits = 0, np.zeros(steps, np.uint8)
    for t in range(steps - 1, -1, -1):
        bits[t] = state & 1
        state = int(previous[state, choices[t, state]])
    return bits[: steps - _MEMORY]


# The grid, its blocks and slots ---------------------------------------------------------------------


def _long_side(ratio: float) -> int:
    return max(_BLOCK, int(round(SHORT_CELLS * ratio / _BLOCK)) * _BLOCK)


def _candidate_grids(height: int, width: int) -> list[tuple[int, int]]:
    """The grid of this size, then its neighbours: a resize may round the aspect ratio across a
    step of the long side."""
    rows, cols = grid_shape(height, width)
    if rows == SHORT_CELLS:
        return [(rows, cols)] + [(rows, c) for c in (cols - _BLOCK, cols + _BLOCK) if c >= SHORT_CELLS]
    return [(rows, cols)] + [(r, cols) for r in (rows - _BLOCK, rows + _BLOCK) if r >= SHORT_CELLS]


@dataclass(frozen=True)
class _Layout:
    """Where the bits go on a grid of rows x cols cells. slot_index: index into the block DCT array
    (block_row, block_col, u, v) of every slot; bit_of_slot: the payload bit each slot carries;
    dither: each slot's lattice offset in [0, STEP)."""

    rows: int
    cols: int
    slot_index: tuple[np.ndarray, ...]
    bit_of_slot: np.ndarray
    dither: np.ndarray


@functools.lru_cache(maxsize=16)
def _layout(rows: int, cols: int) -> _Layout:
    block_rows, block_cols = rows // _BLOCK, cols // _BLOCK
    grid = np.array([(i, j, u, v) for i in range(block_rows) for j in range(block_cols) for u, v in _COEFFICIENTS])
    count = len(grid)
    rng = np.random.Generator(np.random.PCG64(_SEED))
    # Copies of a bit are spread over the whole frame (flat, dark and bright regions alike).
    bit_of_slot = rng.permutation(count) % _CODED_BITS
    dither = rng.random(count) * STEP
    return _Layout(rows, cols, tuple(grid.T), bit_of_slot, dither)


@functools.lru_cache(maxsize=32)
def _area(cells: int, pixels: int) -> sparse.csr_array:
    """(cells, pixels), sparse: row i averages the pixels under cell i (fractional pixels weighted
    by their overlap), as an area resize does. A pixel lies under one or two cells."""
    edges = np.arange(cells + 1) * (pixels / cells)
    left, right = edges[:-1, None], edges[1:, None]
    starts = np.arange(pixels)[None, :]
    overlap = np.clip(np.minimum(right, starts + 1) - np.maximum(left, starts), 0.0, None)
    return sparse.csr_array((overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32))


@functools.lru_cache(maxsize=32)
def _spreaders(cells: int, pixels: int) -> tuple[sparse.csr_array, np.ndarray]:
    """The minimum-norm right inverse of _area, A.T (A A.T)^-1, as its two factors: the sparse
    A.T (pixels, cells) and the small dense (A A.T)^-1 (cells, cells)."""
    area = _area(cells, pixels)
    gram = (area @ area.T).toarray().astype(np.float64)
    return sparse.csr_array(area.T), np.linalg.inv(gram).astype(np.float32)


def _cells(plane: np.ndarray, layout: _Layout) -> np.ndarray:
    """(rows, cols) cell means of a (H, W) plane: A_rows @ plane @ A_cols.T, with sparse A (each
    output row a fixed sum of one or two rows in order, so the same in every process)."""
    height, width = plane.shape
    down_rows = _area(layout.rows, height) @ plane  # (rows, W)
    return (_area(layout.cols, width) @ down_rows.T).T


def _spread(change: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) float32: the smallest change of pixels whose cell means change by `change` (rows,
    cols): U_rows @ change @ U_cols.T with U = A.T (A A.T)^-1, the small inverses applied on the
    grid and the sparse A.T spreading it to pixels."""
    rows, cols = change.shape
    spread_rows, inverse_rows = _spreaders(rows, height)
    spread_cols, inverse_cols = _spreaders(cols, width)
    on_grid = _product(_product(inverse_rows, change.astype(np.float32)), inverse_cols.T)  # (rows, cols)
    tall = spread_rows @ on_grid  # (H, cols)
    return (spread_cols @ tall.T).T


def _block_dct(cells: np.ndarray) -> np.ndarray:
    """(rows, cols) -> (rows/4, cols/4, 4, 4): the orthonormal DCT of every 4x4 block."""
    rows, cols = cells.shape
    blocks = cells.reshape(rows // _BLOCK, _BLOCK, cols // _BLOCK, _BLOCK).transpose(0, 2, 1, 3)
    return dctn(blocks, axes=(2, 3), norm="ortho")


def _block_idct(coefficients: np.ndarray) -> np.ndarray:
    block_rows, block_cols = coefficients.shape[:2]
    blocks = idctn(coefficients, axes=(2, 3), norm="ortho")
    return blocks.transpose(0, 2, 1, 3).reshape(block_rows * _BLOCK, block_cols * _BLOCK)


# Quantisation index modulation ---------------------------------------------------------------------


def _quantise(values: np.ndarray, bits: np.ndarray, dither: np.ndarray) -> np.ndarray:
    """Each value moved to the nearest point of its bit's lattice: dither + bit*STEP/2 + k*STEP."""
    offset = dither + bits * (STEP / 2)
    return np.round((values - offset) / STEP) * STEP + offset


def _soft_bits(values: np.ndarray, layout: _Layout) -> np.ndarray:
    """(258,) the mean over each coded bit's slots of cos(2*pi*(value - dither)/STEP): +1 on the
    lattice of 0, -1 on that of 1."""
    soft = np.cos(2 * np.pi * (values - layout.dither) / STEP)
    copies = np.bincount(layout.bit_of_slot, minlength=_CODED_BITS)
    return np.bincount(layout.bit_of_slot, weights=soft, minlength=_CODED_BITS) / np.maximum(copies, 1)


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b without BLAS: a threaded BLAS sums in an order that depends on its thread count, and a
    frame's pixels must not depend on the process that marks it (a Ray worker runs one thread, a
    local render many)."""
    return np.einsum("ij,jk->ik", a, b, optimize=False)
