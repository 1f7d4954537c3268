"""GPTQ rounding of the default int8 graph's weights (Frantar et al. 2022), calibrated on the self-check's probe tiles.

Rounding each weight to its nearest int8 step leaves an error that is the same for every token of every tile, so it
adds up coherently through the language model's attention over the image tokens: on the tiny test checkpoints it,
not the activations' rounding, decides how far the first answer token moves (docs/vision-precision.md). GPTQ rounds
one input column at a time and moves what that column's rounding left onto the columns not yet rounded, weighted by
H = X^T X of the layer's inputs, so the layer's output error on inputs like X is smallest. X here is the fp32
graph's inputs to each one-product int8 layer on onnx_probe's synthetic tiles: no calibration data, the same int8
graph and kernels (only which int8 values the weights hold changes). FORMAT_VERSION 10's default.

Within the build's memory bound (Calibration): X comes from the self-check's own fp32 reference run, a layer at a time
(onnx_probe.layered_run), whose embeddings the self-check then reuses. Each tile's inputs to the piece's layers go to a file as the piece
runs; once its session is freed, X^T X is summed from them a tile at a time, only that layer's matrices are held, and
the layer's weights are rounded (before the next piece loads); the int8 values go to a file of their own and the int8 graph is built from them afterwards.
H is float32, as GPTQ's reference implementation keeps it: with the 1% damping its Cholesky factor is well within
float32, and float64 would double the largest matrix (an ffn_down's: 3072^2, 38 MB in float32 on 256M; 4304^2,
74 MB on 2.2B) and its inverse's.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from smolcli.runtime.vision.onnx_graph import Graph, VisionWeights, float_linear

DAMP = 0.01  # of H's mean diagonal, added to its diagonal: GPTQ's own default
BLOCK = 128  # columns rounded before the rest are updated (GPTQ's lazy batches: the same result, in BLAS)
PANEL = 128  # the blocked in-place Cholesky's and triangular inverse's block: temporaries of [in, PANEL] at most
SPAN = 512  # X^T X's columns summed per product (Calibration.hessian): reads of [SPAN, tokens]


def gptq_round(weight: np.ndarray, hessian: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """weight [out, in] -> (int8 [in, out], float32 scale [out]) as onnx_int8.quantize_weight gives them (one
    symmetric scale per output channel, from its largest weight), the int8 values chosen by GPTQ with `hessian`
    (float32 [in, in], changed in place: pass a copy to keep it). Input channels whose weights are all zero (the
    outlier channels split off to fp32) are left out of it. The weight itself is left as it is (gptq_round_columns
    works on a transposed copy)."""
    return gptq_round_columns(np.array(weight.T, np.float32, order="C"), hessian)


def gptq_round_columns(columns: np.ndarray, hessian: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """gptq_round on the weight's transpose, columns = W^T [in, out] float32 C-contiguous, worked on in place (the
    input columns not yet rounded take the rounded ones' error): each input column is a contiguous row here, and the
    int8 values come out in the [in, out] layout the graph stores, with no copy.

    GPTQ's lazy batches (Frantar et al. 2022, Algorithm 1): the columns of a block of BLOCK are rounded one per step
    (each one's rounding decides what the next one is given: the loop is sequential by nature, and each step is one
    row of `out` values), the rest of the block updated by each step's outer product, and the columns after the block
    by one BLAS product per BLOCK rows once the block is done: temporaries of [BLOCK, out]. The same operations on
    the same values as the column-major loop before it (graph format 10's first build): the same int8 values."""
    k, n = columns.shape
    absmax, dead = np.zeros(n, np.float32), np.zeros(k, bool)
    for start in range(0, k, BLOCK):  # a block of rows at a time: np.abs(columns) would copy the whole weight
        block = np.abs(columns[start : start + BLOCK])
        np.maximum(absmax, block.max(axis=0), out=absmax)
        dead[start : start + BLOCK] = ~block.any(axis=1)
    scale = np.where(absmax > 0, absmax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    h = hessian.astype(np.float32, copy=False)
    del hessian
    h[dead, :] = 0
    h[:, dead] = 0
    h[dead, dead] = 1
    h[np.diag_indices(k)] += DAMP * max(float(np.mean(np.diag(h))), 1e-12)
    upper = inverse_factor(h)  # H^-1 = U^T U, in h's own storage
    del h
    q = np.empty((k, n), np.int8)
    errors = np.empty((min(BLOCK, k), n), np.float32)
    for start in range(0, k, BLOCK):
        end = min(start + BLOCK, k)
        for j in range(start, end):
            column = columns[j]
            rounded = np.clip(np.rint(column / scale), -127, 127)
            q[j] = rounded
            error = errors[j - start]
            np.subtract(column, rounded * scale, out=error)
            error /= upper[j, j]
            columns[j + 1 : end] -= np.outer(upper[j, j + 1 : end], error)
        for row in range(end, k, BLOCK):  # the columns after the block
            stop = min(row + BLOCK, k)
            columns[row:stop] -= upper[start:end, row:stop].T @ errors[: end - start]
    return q, scale


def _flip(a: np.ndarray) -> None:
    """a = P a P in place, P the order-reversing permutation (a square matrix), a column panel at a time."""
    n = len(a)
    for start in range(0, n // 2, PANEL):  # a[:] = a[::-1] would copy the whole matrix (the two overlap)
        end = min(start + PANEL, n // 2)
        top = a[start:end].copy()
        a[start:end] = a[n - end : n - start][::-1]
        a[n - end : n - start] = top[::-1]
        left = a[:, start:end].copy()
        a[:, start:end] = a[:, n - end : n - start][:, ::-1]
        a[:, n - end : n - start] = left[:, ::-1]


def _cholesky_in_place(a: np.ndarray) -> None:
    """a (symmetric positive definite) -> its lower Cholesky factor L (a = L L^T) in place, blocked; the upper
    triangle left as it was. numpy's own would compute in float64 on two new copies (3x the matrix)."""
    n = len(a)
    for start in range(0, n, PANEL):
        end = min(start + PANEL, n)
        a[start:end, start:end] = np.linalg.cholesky(a[start:end, start:end])
        if end == n:
            break
        inverse_t = np.linalg.inv(a[start:end, start:end]).T.astype(a.dtype)
        a[end:, start:end] = a[end:, start:end] @ inverse_t  # the panel below: L_ik = A_ik L_kk^-T
        panel = a[end:, start:end]
        for row in range(end, n, PANEL):  # the trailing lower part, a row block at a time
            stop = min(row + PANEL, n)
            a[row:stop, end:stop] -= panel[row - end : stop - end] @ panel[: stop - end].T


def _invert_lower_in_place(a: np.ndarray) -> None:
    """a's lower triangle L -> L^-1 in place (the upper triangle zeroed), blocked: column block k of the inverse needs
    the original L right of it only, so the columns are done left to right, each row block top down."""
    n = len(a)
    starts = list(range(0, n, PANEL))
    diagonal = [np.linalg.inv(np.tril(a[s : s + PANEL, s : s + PANEL])).astype(a.dtype) for s in starts]
    for k, start in enumerate(starts):
        end = min(start + PANEL, n)
        a[start:end, start:end] = diagonal[k]
        for i in range(k + 1, len(starts)):
            row, stop = starts[i], min(starts[i] + PANEL, n)
            known = a[row:stop, start:row] @ a[start:row, start:end]  # L_i,k..i-1 X_k..i-1,k
            a[row:stop, start:end] = -(diagonal[i] @ known)
    for start in starts:  # above the diagonal
        a[start : start + PANEL, start + PANEL :] = 0


def inverse_factor(h: np.ndarray) -> np.ndarray:
    """U, upper triangular with U^T U = H^-1, in h's own storage (float32, overwritten): GPTQ's factor. With P the
    order-reversing permutation, P H P = L L^T gives H^-1 = (P L^-1 P)^T (P L^-1 P), and P L^-1 P is upper
    triangular: one in-place Cholesky and one in-place triangular inverse, no [in, in] copies."""
    _flip(h)
    _cholesky_in_place(h)
    _invert_lower_in_place(h)
    _flip(h)
    return h


class Calibration:
    """What the fp32 reference run (onnx_probe.reference_embeddings) does besides its embeddings: records the inputs
    of the layers to round while the fp32 graph is built (linear), keeps each one's values on the probe tiles as its piece
    runs (add), and sums their X^T X and rounds that piece's layers when the piece is done (piece_done), their int8 values and
    scales saved in `folder`; rounded(name) reads them back (mapped) for the int8 graph.

    targets: layer name -> the input channels its int8 weight leaves out (outlier_split's, None for none), the layers
    whose one int8 product GPTQ rounds (onnx_int8.gptq_targets)."""

    def __init__(self, weights: VisionWeights, targets: dict[str, np.ndarray | None], folder: Path):
        self.weights, self.targets, self.folder = weights, targets, folder
        self.inputs: dict[str, str] = {}  # layer name -> its input's name in the fp32 graph
        self._files = 0
        # input name -> this piece's files of its values (a tile each) and their tokens
        self._values: dict[str, list[tuple[Path, int]]] = {}

    def linear(self, g: Graph, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
        if name in self.targets:
            self.inputs[name] = x
        return float_linear(g, x, weight, bias, name)

    @property
    def watched(self) -> set[str]:
        return set(self.inputs.values())

    def add(self, x: str, values: np.ndarray) -> None:
        """One tile's values of a watched input, put in a file until the piece's session is freed: its X^T X is
        summed then (piece_done), so that the piece's session and the layer's largest matrix are never held at
        once (an ffn_down's X^T X is as large as a 256M layer's float32 weights). The file holds X^T (a channel's
        values over the tile's tokens contiguous, written PANEL channels at a time), so that hessian() reads it back
        a block of channels at a time."""
        rows = values.reshape(-1, values.shape[-1]).astype(np.float32, copy=False)
        self._files += 1
        path = self.folder / f"values-{self._files}.bin"
        with open(path, "wb") as file:
            for start in range(0, rows.shape[1], PANEL):
                np.ascontiguousarray(rows[:, start : start + PANEL].T).tofile(file)
        self._values.setdefault(x, []).append((path, rows.shape[0]))

    def hessian(self, x: str) -> np.ndarray:
        """X^T X (float32) of the tiles' values of x, read back a block of channels at a time and their files removed.

        X^T X is symmetric: only its blocks on and above the diagonal are summed (each band of PANEL rows against
        SPAN columns at a time: reads and products of [PANEL + SPAN, tokens]), the rest mirrored once at the end.
        Each entry is the same dot product over the same tokens as the whole [in, in] product's, so the same
        float32 value (and the GPTQ rounding the same int8 values) at half the products and without the tile's
        whole [tokens, in] values in memory."""
        total = None
        for path, tokens in self._values.pop(x):
            k = path.stat().st_size // (4 * tokens)
            if total is None:
                total = np.zeros((k, k), np.float32)

            def channels(start: int, stop: int, path=path, tokens=tokens) -> np.ndarray:
                count = (stop - start) * tokens
                return np.fromfile(path, np.float32, count, offset=4 * start * tokens).reshape(stop - start, tokens)

            for start in range(0, k, PANEL):
                band = channels(start, min(start + PANEL, k))
                for column in range(start, k, SPAN):
                    stop = min(column + SPAN, k)
                    total[start : start + PANEL, column:stop] += band @ channels(column, stop).T
            path.unlink()
        for start in range(0, len(total), PANEL):  # the lower blocks from the upper ones
            total[start + PANEL :, start : start + PANEL] = total[start : start + PANEL, start + PANEL :].T
        return total

    def piece_done(self) -> None:
        for x in sorted(self._values):
            readers = sorted(name for name, read in self.inputs.items() if read == x)
            first = self._columns(readers[0])  # read (dequantized) before X^T X is made: the two are the peak
            summed = self.hessian(x)
            for i, name in enumerate(readers):
                # the last reader takes the sum itself (rounded in place): an ffn_down's has one reader
                if i == len(readers) - 1:
                    h, summed = summed, None
                else:
                    h = summed.copy()
                columns, first = (first if i == 0 else self._columns(name)), None
                q, scale = gptq_round_columns(columns, h)
                del h, columns
                np.save(self.folder / f"{name}.q.npy", q)
                np.save(self.folder / f"{name}.s.npy", scale)

    def _columns(self, name: str) -> np.ndarray:
        """A target layer's weight as its int8 product sees it (outlier_split's channels zeroed), transposed to
        [in, out] as gptq_round_columns takes it, a copy of its own."""
        columns = np.array(self.weights.tensors[f"{name}.weight"].T, np.float32, order="C")
        channels = self.targets[name]
        if channels is not None:
            columns[channels] = 0
        return columns

    def rounded(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(int8 [in, out], float32 scale [out]) of a target layer, or None for a layer not rounded."""
        if name not in self.targets:
            return None
        return np.load(self.folder / f"{name}.q.npy", mmap_mode="r"), np.load(self.folder / f"{name}.s.npy")


@contextmanager
def calibrated(
    weights: VisionWeights, targets: dict[str, np.ndarray | None], threads: int = 2
) -> Iterator[tuple[Calibration, np.ndarray]]:
    """(the rounded weights, the fp32 graph's probe embeddings): one layered fp32 run does both. The rounded weights
    are read from a temporary folder, removed on leaving."""
    from smolcli.runtime.vision.onnx_probe import reference_embeddings
    from smolcli.util.heap import map_large_blocks

    map_large_blocks()  # each tile's outputs and each layer's matrices unmapped when freed, not kept in the heap
    with tempfile.TemporaryDirectory(prefix="smolcli-gptq-") as folder:
        calibration = Calibration(weights, targets, Path(folder))
        reference = reference_embeddings(weights, threads, calibration)
        missing = sorted(set(targets) - set(calibration.inputs))
        if missing:
            raise ValueError(f"the fp32 graph has no layers {missing[:3]} to calibrate")
        yield calibration, reference
