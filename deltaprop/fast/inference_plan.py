"""The compiled inference plan: a fast variant of the op ``eval_program`` (``functional.inference``).

What ONNX Runtime, OpenVINO and OpenCV DNN do to a network before running it, done once per program and input
batch size (docs/inference.md has the measurements):

- **Batch norm folded** into the convolution's weights and bias, in float64 (W'[f] = W[f]·scale[f],
  b'[f] = bias[f]·scale[f] + shift[f]): the epilogue is one addition. A program holds the layers' own arrays; the
  network that owns it makes a new program when they change (``functional.inference.same_arrays``), and the plan
  is made again from it.
- **Weights arranged for their product** once: (F, C·kh·kw) matrices, and for 3×3 stride-1 convolutions of at
  least ``WINOGRAD_MIN_CHANNELS`` input channels Winograd's transformed filters (``fast/winograd.py``: 2.25× fewer
  multiply-adds).
- **Epilogues fused**: the bias and the activation (and a 2×2 stride-2 max pooling that follows and is the
  convolution's only reader) in the output transform or in one pass after the product (``fast/eval_kernels.py``).
- **Buffers reused**: every step's output, the im2col/Winograd workspace and the products' outputs are allocated
  on the first call for a batch size and reused by the next calls (no allocation per layer in steady state);
  outputs of one step that a concatenation reads are written straight into their slice of it.
- 1×1 convolutions are one product per sample on the input itself (no im2col); max pooling skips the cells
  outside the input (no −∞-padded copy).

The outputs returned are fresh arrays (a copy of the plan's buffers), so a caller may keep them across calls.
Steps the plan has no kernel for (``CallStep``, other activations) run as the reference runs them.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import dispatch
from ..functional import inference as fi
from ..functional.im2col import conv_geometry
from ..runtime import jit as _numba
from ..runtime import threads
from . import cblas, eval_kernels, im2col_numba, split_products, winograd

#: 3×3 stride-1 convolutions with at least this many input (and output) channels use Winograd's F(2×2, 3×3):
#: faster than im2col and the product from 16 channels on yolov3-tiny's layers, slower for its 3-channel first
#: layer (docs/inference.md)
WINOGRAD_MIN_CHANNELS = 16

#: elements of a block's V and M in the fused Winograd pipeline (``winograd.fused_blocks``): 256 KiB of float32
BLOCK_ELEMENTS = 1 << 16
#: ... for convolutions whose transformed filters (16·F·C) hold at most this many elements (they are read again
#: for every block, from the core's cache)
BLOCK_FILTERS = 1 << 17
#: the products of a block have at least this many columns (tiles)
BLOCK_MIN_TILES = 64

#: filter blocks per thread in the products and output transform of a Winograd convolution by filters (1: one
#: block of filters each, measured against 2 and 4 on yolov3-tiny's layers)
FILTER_BLOCKS_PER_THREAD = 1

#: convolutions by im2col run sample by sample (columns, product and epilogue of a sample on one thread, in its
#: core's cache) at batch sizes of at least one sample per thread, where a sample's columns hold at most this many
#: elements (1 MiB of float32); LeNet's layers at batch 64: 0.79 -> 0.44 and 0.92 -> 0.61 ms
PER_SAMPLE_COLUMNS = 1 << 18

#: filters folded and transformed at a time when a plan is made (``fold_winograd``)
FOLD_FILTERS = 64

_plans: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # program -> its CompiledPlan


def _act(activation: str, slope: float) -> Tuple[bool, float]:
    """(apply?, s) of the activation max(y, s·y)."""
    if activation == "linear":
        return False, 1.0
    return True, (slope if activation == "leaky" else 0.0)


@dataclass
class _Conv:
    """A convolution step compiled: its folded weights arranged for the kernel chosen."""
    index: int
    step: fi.ConvStep
    kind: str                          # "winograd", "gemm1x1", "direct", "im2col"
    w2: np.ndarray                     # (F, C·kh·kw) folded, or Winograd's U (16, F, C)
    w4: Optional[np.ndarray]           # (F, C, kh, kw) folded (the direct loops)
    bias: np.ndarray                   # folded bias (F,)
    act: bool
    slope: float
    pool: Optional[int] = None         # the index of a fused 2×2/2 max pooling step


def folded_bias(step: fi.ConvStep, dtype) -> np.ndarray:
    """b'[f] = bias[f]·scale[f] + shift[f] (the bias alone without a batch norm), in float64, returned in
    ``dtype``."""
    b = np.zeros(step.weight.shape[0]) if step.bias is None else step.bias.astype(np.float64)
    if step.bn is None:
        return b.astype(dtype)
    scale, shift = step.bn.scale_shift(np.float64)
    return (b * scale + shift).astype(dtype)


def folded_weights(step: fi.ConvStep, dtype, lo: int = 0, hi: Optional[int] = None) -> np.ndarray:
    """W'[f] = W[f]·scale[f] for the filters lo..hi (all by default), in float64, returned in ``dtype``."""
    w = step.weight[lo:hi].astype(np.float64)
    if step.bn is None:
        return w.astype(dtype)
    scale = step.bn.scale_shift(np.float64)[0][lo:hi]
    return (w * scale[:, None, None, None]).astype(dtype)


def fold(step: fi.ConvStep, dtype) -> Tuple[np.ndarray, np.ndarray]:
    """(W', b') of conv → batch norm (or bias): W'[f] = W[f]·scale[f], b'[f] = bias[f]·scale[f] + shift[f],
    computed in float64 and returned in ``dtype``."""
    return folded_weights(step, dtype), folded_bias(step, dtype)


def fold_winograd(step: fi.ConvStep, dtype) -> np.ndarray:
    """Winograd's filters U (16, F, C) of the folded weights W' (``folded_weights``, rounded to ``dtype``, then
    ``winograd.transform_weights``), made ``FOLD_FILTERS`` filters at a time: the float64 temporaries stay small
    (they set the peak memory of making a plan), and W' itself is not kept."""
    f, c = step.weight.shape[:2]
    u = np.empty((winograd.ALPHA ** 2, f, c), dtype)
    for lo in range(0, f, FOLD_FILTERS):
        w = folded_weights(step, dtype, lo, lo + FOLD_FILTERS)
        u[:, lo:lo + w.shape[0]] = winograd.transform_weights(w)
    return u


def _conv_kind(step: fi.ConvStep, in_shape: Tuple[int, ...]) -> str:
    """How a convolution runs: "winograd" (3×3, stride 1, at least ``WINOGRAD_MIN_CHANNELS`` channels in and
    out), "direct" (3×3, stride 1, fewer channels: a first layer), "gemm1x1" (1×1, stride 1, no padding: the
    product on the input itself), else "im2col" (the columns, then the product)."""
    f, cg, kh, kw = step.weight.shape
    c = in_shape[0]
    plain = step.groups == 1 and tuple(step.stride) == (1, 1)
    if plain and kh == kw == 3:
        return "winograd" if c >= WINOGRAD_MIN_CHANNELS and f >= WINOGRAD_MIN_CHANNELS else "direct"
    if plain and kh == kw == 1 and tuple(step.padding) == (0, 0, 0, 0):
        return "gemm1x1"
    return "im2col"


class CompiledPlan:
    """A program with its weights folded and arranged and its fusions decided; per batch size, its buffers and the
    list of operations that run it."""

    def __init__(self, program: fi.EvalProgram) -> None:
        self.program = program
        steps = program.steps
        self.dtype = next((s.weight.dtype for s in steps if isinstance(s, (fi.ConvStep, fi.DenseStep))),
                          np.dtype(np.float32))
        self.shapes = _shapes(program)
        readers: Dict[int, List[int]] = {}
        for i, s in enumerate(steps):
            for j in s.srcs:
                readers.setdefault(j, []).append(i)
        self.readers = readers
        self.convs: Dict[int, _Conv] = {}
        self.fused_pools: Dict[int, int] = {}          # pool step -> the conv that computes it
        for i, s in enumerate(steps):
            if isinstance(s, fi.ConvStep) and s.activation in fi.ACTIVATIONS:
                self.convs[i] = self._compile_conv(i, s)
        self.dense: Dict[int, Tuple[np.ndarray, np.ndarray, bool, float]] = {}
        for i, s in enumerate(steps):
            if isinstance(s, fi.DenseStep) and s.activation in fi.ACTIVATIONS:
                b = np.zeros(s.weight.shape[0], s.weight.dtype) if s.bias is None else s.bias
                self.dense[i] = (np.ascontiguousarray(s.weight.T), np.ascontiguousarray(b),
                                 *_act(s.activation, s.slope))
        self.slices = self._concat_slices()
        self._batch = -1
        self._ops: List[Callable] = []
        self._bufs: List[Optional[np.ndarray]] = []

    # --- compile -------------------------------------------------------------------------------------------------
    def _compile_conv(self, i: int, s: fi.ConvStep) -> _Conv:
        kind = _conv_kind(s, self.shapes[s.src])
        b = folded_bias(s, self.dtype)
        act, slope = _act(s.activation, s.slope)
        if kind == "winograd":
            w2, w4 = fold_winograd(s, self.dtype), None
        else:
            w4 = folded_weights(s, self.dtype)
            w2 = w4.reshape(w4.shape[0], -1)
        conv = _Conv(i, s, kind, w2, w4 if kind == "direct" else None, b, act, slope)
        pools = [r for r in self.readers.get(i, []) if isinstance(self.program.steps[r], fi.MaxPoolStep)
                 and _fusable_pool(self.program.steps[r])]
        if pools:
            conv.pool = pools[0]
            self.fused_pools[conv.pool] = i
        return conv

    def _concat_slices(self) -> Dict[int, Tuple[int, int]]:
        """{producer: (concat step, channel offset)}: producers whose output buffer is a slice of a concatenation
        (each producer in one concatenation at most, a step whose output the plan writes itself)."""
        out: Dict[int, Tuple[int, int]] = {}
        for i, s in enumerate(self.program.steps):
            if not isinstance(s, fi.ConcatStep) or len(s.inputs) < 2 or len(set(s.inputs)) != len(s.inputs):
                continue
            off = 0
            for j in s.inputs:
                if j != fi.INPUT and j not in out and self._writes_own_buffer(j):
                    out[j] = (i, off)
                off += self.shapes[j][0]
        return out

    def _writes_own_buffer(self, j: int) -> bool:
        """Whether step j's output is written by the plan into a buffer of its choice."""
        s = self.program.steps[j]
        return (j in self.fused_pools or j in self.convs or j in self.dense
                or isinstance(s, (fi.MaxPoolStep, fi.UpsampleStep, fi.LogisticStep)))

    def _needs_full(self, i: int) -> bool:
        """Whether conv i's full output is read by another step than its fused pooling, or is an output."""
        c = self.convs[i]
        return i in self.program.outputs or any(r != c.pool for r in self.readers.get(i, []))

    def _blocked(self, c: _Conv, n: int) -> bool:
        """Whether Winograd conv c runs block by block at batch size n (``winograd.fused_blocks``): its transformed
        filters are small (``BLOCK_FILTERS``) and its transformed maps (16·(C + F)·tiles) outweigh them."""
        f, ho, wo = self.shapes[c.index]
        th, tw = winograd.tiles(ho, wo)
        cin = self.shapes[c.step.src][0]
        return (cblas.library() is not None and 16 * f * cin <= BLOCK_FILTERS
                and (cin + f) * n * th * tw > f * cin)

    def _block_rows(self, c: _Conv, tw: int) -> int:
        """Tile rows per block: V and M within ``BLOCK_ELEMENTS``, at least ``BLOCK_MIN_TILES`` tiles."""
        f = self.shapes[c.index][0]
        cin = self.shapes[c.step.src][0]
        return max(1, -(-BLOCK_MIN_TILES // tw), BLOCK_ELEMENTS // (winograd.ALPHA ** 2 * (cin + f) * tw))

    def _per_sample(self, c: _Conv, n: int) -> bool:
        """Whether im2col conv c runs sample by sample at batch size n (``eval_kernels.im2col_product_epilogue``):
        one group, every thread a sample or more, a sample's columns within ``PER_SAMPLE_COLUMNS`` elements."""
        f, ho, wo = self.shapes[c.index]
        return (c.kind == "im2col" and c.step.groups == 1 and cblas.library() is not None
                and n >= threads.kernel_threads() and c.w2.shape[1] * ho * wo <= PER_SAMPLE_COLUMNS)

    def _workspace(self, c: _Conv, n: int) -> int:
        """Elements of shared workspace conv c needs at batch size n: Winograd's V and M (unless by blocks), the
        im2col columns, the product's output when only the pooled map is kept."""
        f, ho, wo = self.shapes[c.index]
        cin, h, w = self.shapes[c.step.src]
        z = 0 if self._needs_full(c.index) else n * f * ho * wo
        if c.kind == "winograd":
            th, tw = winograd.tiles(ho, wo)
            return 0 if self._blocked(c, n) else winograd.ALPHA ** 2 * (cin + f) * n * th * tw
        if c.kind == "im2col":
            return 0 if self._per_sample(c, n) else z + c.w2.shape[1] * c.step.groups * n * ho * wo
        return z if c.kind == "gemm1x1" else 0

    # --- buffers and operations, per batch size --------------------------------------------------------------------
    def _allocate(self, n: int) -> None:
        """Every output buffer, the workspace and the operations for batch size n."""
        steps = self.program.steps
        bufs: List[Optional[np.ndarray]] = [None] * len(steps)
        for i, s in enumerate(steps):
            if isinstance(s, fi.ConcatStep) and len(s.inputs) > 1:
                bufs[i] = np.empty((n,) + self.shapes[i], self.dtype)
        for i, s in enumerate(steps):
            if i in self.slices:
                k, off = self.slices[i]
                bufs[i] = bufs[k][:, off:off + self.shapes[i][0]]
            elif i in self.convs and not self._needs_full(i):
                continue                                     # only its pooled map is written
            elif bufs[i] is None and self._writes_own_buffer(i):
                bufs[i] = np.empty((n,) + self.shapes[i], self.dtype)
        self._bufs = bufs
        self._work = np.empty(max([self._workspace(c, n) for c in self.convs.values()] + [0]), self.dtype)
        self._dummy = np.empty((0, 0, 0, 0), self.dtype)
        self._ops = [self._op(i, s, n) for i, s in enumerate(steps)]
        self._batch = n

    def _op(self, i: int, s: fi.Step, n: int) -> Callable:
        """The operation computing step i: ``op(xs)`` with its inputs' arrays, returning its output."""
        if i in self.fused_pools:
            out = self._bufs[i]
            return lambda xs: out                            # written by its convolution's epilogue
        if i in self.convs:
            return self._conv_op(self.convs[i], n)
        if isinstance(s, fi.MaxPoolStep):
            return partial(self._pool, self._bufs[i], s)
        if isinstance(s, fi.ConcatStep):
            if len(s.inputs) == 1:
                return lambda xs: xs[0]
            copies = [(k, off, off + self.shapes[j][0]) for k, (j, off) in enumerate(zip(s.inputs, _offsets(
                [self.shapes[j][0] for j in s.inputs]))) if self.slices.get(j, (None,))[0] != i]
            return partial(self._concat, self._bufs[i], copies)
        if isinstance(s, fi.UpsampleStep):
            return partial(self._upsample, self._bufs[i], s)
        if i in self.dense:
            return partial(self._dense, self._bufs[i], *self.dense[i])
        if isinstance(s, fi.LogisticStep):
            return partial(self._logistic, self._bufs[i], np.asarray(s.mask, dtype=np.bool_))
        buf = self._bufs[i] if i in self.slices else None
        return partial(self._call, s, buf)

    # --- run -----------------------------------------------------------------------------------------------------
    def run(self, x: np.ndarray, keep_steps: bool = False):
        """The program's outputs for x (fresh arrays); with ``keep_steps`` also every step's output (views of the
        plan's buffers, None for a convolution whose pooled map alone was written)."""
        if x.shape[0] != self._batch:
            self._allocate(x.shape[0])
        outs: List[Optional[np.ndarray]] = [None] * len(self._ops)
        with cblas.one_thread():
            for i, (s, op) in enumerate(zip(self.program.steps, self._ops)):
                outs[i] = op([x if j == fi.INPUT else outs[j] for j in s.srcs])
        result = [np.array(outs[i], copy=True) for i in self.program.outputs]
        return (result, outs) if keep_steps else result

    def _conv_op(self, c: _Conv, n: int) -> Callable:
        """The operation of convolution c at batch size n, its buffers and constants bound."""
        i, s = c.index, c.step
        f, ho, wo = self.shapes[i]
        y = self._bufs[i]
        full = y is not None
        pooled = self._bufs[c.pool] if c.pool is not None else None
        pool = pooled is not None
        yy, pp = (y if full else self._dummy), (pooled if pool else self._dummy)
        slope = self.dtype.type(c.slope)
        pt, pb, pl, pr = s.padding
        cin = self.shapes[s.src][0]
        if c.kind == "winograd":
            th, tw = winograd.tiles(ho, wo)
            if self._blocked(c, n):
                rows = self._block_rows(c, tw)
                addr, is64 = cblas.gemm_address(self.dtype), cblas.library()["is64"]
                cblas.bind()

                def winograd_blocks(xs):
                    winograd.fused_blocks(xs[0], c.w2, c.bias, slope, c.act, th, tw, ho, wo, pt, pl, rows, yy, pp,
                                          full, pool, addr, is64)
                    return y
                return winograd_blocks
            nt = n * th * tw
            v = self._work[:16 * cin * nt].reshape(16, cin, nt)
            m = self._work[16 * cin * nt:16 * (cin + f) * nt].reshape(16, f, nt)

            addr, is64 = cblas.gemm_address(self.dtype), cblas.library()["is64"]
            fblocks = threads.kernel_threads() * FILTER_BLOCKS_PER_THREAD
            cblas.bind()

            def winograd_whole(xs):
                winograd.input_transform(xs[0], v, th, tw, pt, pl)
                winograd.products_output(c.w2, v, m, c.bias, slope, c.act, th, tw, ho, wo, yy, pp, full, pool,
                                         addr, is64, fblocks)
                return y
            return winograd_whole
        if c.kind == "direct":
            h, w = self.shapes[s.src][1:]
            xp = np.zeros((n, cin, h + pt + pb, w + pl + pr), self.dtype)   # borders zeroed once

            def direct(xs):
                xp[:, :, pt:pt + h, pl:pl + w] = xs[0]
                eval_kernels.direct3x3_bias_act_pool(xp, c.w4, c.bias, slope, c.act, yy, pp, full, pool)
                return y
            return direct
        if self._per_sample(c, n):
            kh, kw = s.weight.shape[2:]
            sh, sw = s.stride
            addr, is64 = cblas.gemm_address(self.dtype), cblas.library()["is64"]
            cblas.bind()

            def per_sample(xs):
                eval_kernels.im2col_product_epilogue(xs[0], c.w2, c.bias, slope, c.act, kh, kw, sh, sw, pt, pl, ho,
                                                     wo, yy, pp, full, pool, addr, is64)
                return y
            return per_sample
        z = y if full else self._work[:n * f * ho * wo].reshape(n, f, ho, wo)
        if c.kind == "gemm1x1" and full and not pool:
            def product_epilogue(xs):                        # the epilogue in the product's loop
                split_products.matmul_bias_act(c.w2, xs[0].reshape(n, cin, -1), y.reshape(n, f, -1), c.bias, slope,
                                               c.act)
                return y
            return product_epilogue
        elif c.kind == "gemm1x1":
            def product(xs):
                split_products.matmul(c.w2, xs[0].reshape(n, cin, -1), z.reshape(n, f, -1))
        else:
            g = conv_geometry((n, cin) + tuple(self.shapes[s.src][1:]), s.weight.shape, s.stride, s.padding, 1,
                              s.groups)
            G = s.groups
            start = 0 if full else n * f * ho * wo
            cols = self._work[start:start + g.taps * g.positions]          # (C·kh·kw, N·Ho·Wo), reused
            blocks6 = cols.reshape(g.c, g.kh, g.kw, n, ho, wo)
            per_sample = cols.reshape(G, g.taps // G, n, ho * wo).transpose(0, 2, 1, 3)   # [group, sample]
            w3 = c.w2.reshape(G, f // G, -1)
            z4 = z.reshape(n, G, f // G, ho * wo)

            def product(xs):
                im2col_numba._im2col_loops(xs[0], blocks6, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, g.dh, g.dw)
                for q in range(G):
                    split_products.matmul(w3[q], per_sample[q], z4[:, q])

        def conv_then_epilogue(xs):
            product(xs)
            eval_kernels.bias_act_pool(z, c.bias, slope, c.act, yy, pp, full, pool)
            return y
        return conv_then_epilogue

    @staticmethod
    def _pool(out: np.ndarray, s: fi.MaxPoolStep, xs: List[np.ndarray]) -> np.ndarray:
        (kh, kw), (sh, sw) = s.size, s.stride
        eval_kernels.max_pool(xs[0], kh, kw, sh, sw, s.padding[0], s.padding[2], out)
        return out

    @staticmethod
    def _logistic(out: np.ndarray, mask: np.ndarray, xs: List[np.ndarray]) -> np.ndarray:
        eval_kernels.logistic_channels(xs[0], mask, out)
        return out

    @staticmethod
    def _concat(out: np.ndarray, copies: List[Tuple[int, int, int]], xs: List[np.ndarray]) -> np.ndarray:
        for k, lo, hi in copies:                             # the inputs not written in place
            out[:, lo:hi] = xs[k]
        return out

    @staticmethod
    def _upsample(out: np.ndarray, s: fi.UpsampleStep, xs: List[np.ndarray]) -> np.ndarray:
        x = xs[0]
        n, c, h, w = x.shape
        blocks = out.reshape(n, c, h, s.stride, w, s.stride)
        blocks[...] = (x * x.dtype.type(s.scale) if s.scale != 1.0 else x)[:, :, :, None, :, None]
        return out

    def _dense(self, out: np.ndarray, wt: np.ndarray, b: np.ndarray, act: bool, slope: float,
               xs: List[np.ndarray]) -> np.ndarray:
        x = xs[0]
        split_products.matmul(x.reshape(x.shape[0], -1), wt, out)
        o4 = out.reshape(out.shape[0], out.shape[1], 1, 1)            # the bias per column: per "channel"
        eval_kernels.bias_act_pool(o4, b, self.dtype.type(slope), act, o4, self._dummy, True, False)
        return out

    @staticmethod
    def _call(s: fi.Step, buf: Optional[np.ndarray], xs: List[np.ndarray]) -> np.ndarray:
        out = fi.run_step(s, xs)
        if buf is not None:                                  # a concatenation's input: into its slice
            np.copyto(buf, out)
            return buf
        return out


def _offsets(sizes: Sequence[int]) -> List[int]:
    """The running sums 0, s0, s0 + s1, ... (channel offsets in a concatenation)."""
    out, acc = [], 0
    for v in sizes:
        out.append(acc)
        acc += v
    return out


def _fusable_pool(p: fi.MaxPoolStep) -> bool:
    """A 2×2 stride-2 max pooling whose windows start at the map's corner (no top or left padding)."""
    return tuple(p.size) == (2, 2) and tuple(p.stride) == (2, 2) and p.padding[0] == 0 and p.padding[2] == 0


def _shapes(program: fi.EvalProgram) -> Dict[int, Tuple[int, ...]]:
    """(C, H, W) (or (features,)) of every step's output for one sample, by running the shapes through."""
    shapes: Dict[int, Tuple[int, ...]] = {fi.INPUT: tuple(program.input_shape)}
    for i, s in enumerate(program.steps):
        if isinstance(s, fi.ConvStep):
            c, h, w = shapes[s.src]
            g = conv_geometry((1, c, h, w), s.weight.shape, s.stride, s.padding, 1, s.groups)
            shapes[i] = (g.f, g.ho, g.wo)
        elif isinstance(s, fi.MaxPoolStep):
            c, h, w = shapes[s.src]
            (kh, kw), (sh, sw) = s.size, s.stride
            pt, pb, pl, pr = s.padding
            shapes[i] = (c, (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1)
        elif isinstance(s, fi.ConcatStep):
            shapes[i] = (sum(shapes[j][0] for j in s.inputs),) + tuple(shapes[s.inputs[0]][1:])
        elif isinstance(s, fi.UpsampleStep):
            c, h, w = shapes[s.src]
            shapes[i] = (c, h * s.stride, w * s.stride)
        elif isinstance(s, fi.DenseStep):
            shapes[i] = (s.weight.shape[0],)
        elif isinstance(s, fi.LogisticStep):
            shapes[i] = shapes[s.src]
        else:
            shapes[i] = getattr(s, "shape", None)            # a CallStep's, when its builder knew it
    return shapes


# --- the variant ----------------------------------------------------------------------------------------------------

def compiled(program: fi.EvalProgram) -> CompiledPlan:
    """The plan of ``program``, made on first use (kept while the program lives)."""
    plan = _plans.get(program)
    if plan is None:
        plan = _plans[program] = CompiledPlan(program)
    return plan


def run_compiled(program: fi.EvalProgram, x: np.ndarray, keep_steps: bool = False):
    """``functional.inference.run_program`` by the program's compiled plan."""
    return compiled(program).run(x, keep_steps)


def supported(program: fi.EvalProgram, x: np.ndarray, keep_steps: bool = False) -> bool:
    """numba on, a float32 or float64 input of the program's dtype, and every step's shape known before it runs
    (a CallStep's output whose shape its builder did not give is read only by CallSteps and outputs)."""
    if not _numba.enabled() or not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
        return False
    if tuple(x.shape[1:]) != tuple(program.input_shape):
        return False
    ws = [s.weight.dtype for s in program.steps if isinstance(s, (fi.ConvStep, fi.DenseStep))]
    if any(d != x.dtype for d in ws):
        return False
    unknown = {i for i, s in enumerate(program.steps) if isinstance(s, fi.CallStep) and s.shape is None}
    return all(isinstance(s, fi.CallStep) for s in program.steps if any(j in unknown for j in s.srcs))


# --- examples for tests/test_variants.py ------------------------------------------------------------------------

def example_program(dtype=np.float32, seed: int = 0) -> fi.EvalProgram:
    """A small program with a step of every kind the plan compiles, on (N, 3, 12, 12) inputs: the direct first
    layer (batch norm, Darknet's ε) with its fused pooling and its full map read by a concatenation, Winograd by
    blocks and whole, a 1×1 product with its epilogue, upsampling into the concatenation, a strided grouped
    5×5 convolution by im2col, Darknet's 2×2/1 max pooling, the logistic on some channels, a dense layer, and
    5×5 convolutions sample by sample (at batch sizes of a sample per thread) with their full map and pooling, and
    with the pooled map alone."""
    g = np.random.default_rng(seed)

    def w(*shape):
        return (g.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(dtype)

    def bn(c, darknet=False):
        return fi.BatchNormEval(g.uniform(0.5, 1.5, c).astype(dtype), g.normal(0, 0.1, c).astype(dtype),
                                g.normal(0, 0.1, c).astype(dtype), g.uniform(0.5, 1.5, c).astype(dtype),
                                1e-6 if darknet else 1e-5, darknet)
    steps = [
        fi.ConvStep(fi.INPUT, w(16, 3, 3, 3), None, bn(16, True), "leaky", 0.1, (1, 1), (1, 1, 1, 1)),  # 0 direct
        fi.MaxPoolStep(0, (2, 2), (2, 2)),                                                             # 1 fused
        fi.ConvStep(1, w(16, 16, 3, 3), None, bn(16), "leaky", 0.1, (1, 1), (1, 1, 1, 1)),             # 2 blocks
        fi.ConvStep(2, w(96, 16, 3, 3), g.normal(0, 0.1, 96).astype(dtype), None, "relu", 0.0, (1, 1),
                    (1, 1, 1, 1)),                                                                      # 3
        fi.ConvStep(3, w(96, 96, 3, 3), None, bn(96), "leaky", 0.1, (1, 1), (1, 1, 1, 1)),             # 4 whole
        fi.ConvStep(4, w(32, 96, 1, 1), g.normal(0, 0.1, 32).astype(dtype), None, "linear", 1.0),     # 5 1×1
        fi.UpsampleStep(5, 2),                                                                          # 6
        fi.ConcatStep((6, 0)),                                                                          # 7
        fi.ConvStep(7, w(8, 24, 5, 5), g.normal(0, 0.1, 8).astype(dtype), None, "leaky", 0.1, (2, 2),
                    (2, 2, 2, 2), groups=2),                                                           # 8 im2col
        fi.MaxPoolStep(8, (2, 2), (1, 1), (0, 1, 0, 1)),                                               # 9 2×2/1
        fi.LogisticStep(9, tuple(c % 3 != 1 for c in range(8))),                                        # 10
        fi.DenseStep(10, w(10, 8 * 6 * 6), g.normal(0, 0.1, 10).astype(dtype), "relu", 0.0),          # 11
        fi.ConvStep(1, w(8, 16, 5, 5), g.normal(0, 0.1, 8).astype(dtype), None, "leaky", 0.1, (1, 1),
                    (2, 1, 2, 1)),                                                                      # 12 by
        fi.MaxPoolStep(12, (2, 2), (2, 2)),                                                             # 13 sample
        fi.ConvStep(1, w(4, 16, 5, 5), None, bn(4), "relu", 0.0, (1, 1), (2, 2, 2, 2)),                # 14 pooled
        fi.MaxPoolStep(14, (2, 2), (2, 2)),                                                             # 15 only
    ]
    return fi.EvalProgram(steps, (10, 11, 4, 12, 13, 15), (3, 12, 12))


def _examples() -> List[dispatch.Example]:
    out = []
    for k, (dtype, n) in enumerate(((np.float32, 1), (np.float32, 3), (np.float64, 2))):
        x = np.random.default_rng(10 + k).standard_normal((n, 3, 12, 12)).astype(dtype)
        out.append(dispatch.Example((example_program(dtype, k), x)))
    return out


dispatch.register(dispatch.Variant(
    op="eval_program", name="compiled plan", forward=run_compiled, applies=supported, exact=False,
    rtol=1e-4, atol=1e-5, mirrors="functional.inference.run_program", examples=_examples,
    doc="batch norm folded, Winograd F(2x2,3x3), fused epilogues and pooling, buffers reused"))
