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
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import dispatch
from ..functional import inference as fi
from ..functional.im2col import conv_geometry, im2col
from ..runtime import jit as _numba
from . import conv_direct, eval_kernels, split_products, winograd

#: 3×3 stride-1 convolutions with at least this many input (and output) channels use Winograd's F(2×2, 3×3):
#: faster than im2col and the product from 16 channels on yolov3-tiny's layers, slower for its 3-channel first
#: layer (docs/inference.md)
WINOGRAD_MIN_CHANNELS = 16

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


def fold(step: fi.ConvStep, dtype) -> Tuple[np.ndarray, np.ndarray]:
    """(W', b') of conv → batch norm (or bias): W'[f] = W[f]·scale[f], b'[f] = bias[f]·scale[f] + shift[f],
    computed in float64 and returned in ``dtype``."""
    w = step.weight.astype(np.float64)
    f = w.shape[0]
    b = np.zeros(f) if step.bias is None else step.bias.astype(np.float64)
    if step.bn is None:
        return w.astype(dtype), b.astype(dtype)
    scale, shift = step.bn.scale_shift(np.float64)
    return (w * scale[:, None, None, None]).astype(dtype), (b * scale + shift).astype(dtype)


def _conv_kind(step: fi.ConvStep, in_shape: Tuple[int, ...]) -> str:
    f, cg, kh, kw = step.weight.shape
    c = in_shape[0]
    stride1 = tuple(step.stride) == (1, 1)
    if step.groups == 1 and kh == kw == 3 and stride1 and c >= WINOGRAD_MIN_CHANNELS and f >= WINOGRAD_MIN_CHANNELS:
        return "winograd"
    if step.groups == 1 and kh == kw == 1 and stride1 and tuple(step.padding) == (0, 0, 0, 0):
        return "gemm1x1"
    g = conv_geometry((1,) + tuple(in_shape), step.weight.shape, step.stride, step.padding, 1, step.groups)
    if conv_direct.applies(g):
        return "direct"
    return "im2col"


class CompiledPlan:
    """A program with its weights folded and arranged, its fusions decided and, per batch size, its buffers."""

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
                self.dense[i] = (np.ascontiguousarray(s.weight.T), np.ascontiguousarray(b), *_act(s.activation, s.slope))
        self.slices = self._concat_slices()
        self._batch = -1
        self._bufs: List[Optional[np.ndarray]] = []
        self._work = np.empty(0, self.dtype)

    # --- compile -------------------------------------------------------------------------------------------------
    def _compile_conv(self, i: int, s: fi.ConvStep) -> _Conv:
        in_shape = self.shapes[s.src]
        kind = _conv_kind(s, in_shape)
        w, b = fold(s, self.dtype)
        act, slope = _act(s.activation, s.slope)
        w2 = winograd.transform_weights(w) if kind == "winograd" else np.ascontiguousarray(w.reshape(w.shape[0], -1))
        conv = _Conv(i, s, kind, w2, w if kind == "direct" else None, b, act, slope)
        rd = self.readers.get(i, [])
        pools = [r for r in rd if isinstance(self.program.steps[r], fi.MaxPoolStep)
                 and _fusable_pool(self.program.steps[r])]
        if pools:
            conv.pool = pools[0]
        if conv.pool is not None:
            self.fused_pools[conv.pool] = i
        return conv

    def _concat_slices(self) -> Dict[int, Tuple[int, int]]:
        """{producer: (concat step, channel offset)}: producers whose output buffer is a slice of a concatenation
        (each producer in one concatenation at most, a step whose output the plan writes itself)."""
        out: Dict[int, Tuple[int, int]] = {}
        for i, s in enumerate(self.program.steps):
            if not isinstance(s, fi.ConcatStep) or len(s.inputs) < 2:
                continue
            if len(set(s.inputs)) != len(s.inputs):
                continue
            off = 0
            for j in s.inputs:
                if j != fi.INPUT and j not in out and self._writes_own_buffer(j):
                    out[j] = (i, off)
                off += self.shapes[j][0]
        return out

    def _writes_own_buffer(self, j: int) -> bool:
        s = self.program.steps[j]
        if j in self.fused_pools:
            return True
        if isinstance(s, fi.ConvStep):
            c = self.convs.get(j)
            return c is not None
        return isinstance(s, (fi.MaxPoolStep, fi.UpsampleStep))

    # --- buffers -------------------------------------------------------------------------------------------------
    def _allocate(self, n: int) -> None:
        """Every output buffer and the workspace for batch size n (a concatenation's producers get views)."""
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
            elif bufs[i] is None and (self._writes_own_buffer(i) or i in self.dense):
                bufs[i] = np.empty((n,) + self.shapes[i], self.dtype)
        self._padded = {}
        for i, c in self.convs.items():
            if c.kind == "direct" and c.w4.shape[2:] == (3, 3):   # the zero-padded input: borders zeroed once
                cin, h, w = self.shapes[c.step.src]
                pt, pb, pl, pr = c.step.padding
                self._padded[i] = np.zeros((n, cin, h + pt + pb, w + pl + pr), self.dtype)
        self._work = np.empty(max([self._workspace(c, n) for c in self.convs.values()] + [0]), self.dtype)
        self._bufs = bufs
        self._batch = n

    def _needs_full(self, i: int) -> bool:
        """Whether conv i's full output is read by another step than its fused pooling, or is an output."""
        c = self.convs[i]
        return i in self.program.outputs or any(r != c.pool for r in self.readers.get(i, []))

    def _workspace(self, c: _Conv, n: int) -> int:
        """Elements of shared workspace conv step c needs at batch size n: Winograd's V and M, or the product's
        output when only the pooled map is kept."""
        f, ho, wo = self.shapes[c.index]
        if c.kind == "winograd":
            th, tw = winograd.tiles(ho, wo)
            return winograd.ALPHA ** 2 * (self.shapes[c.step.src][0] + f) * n * th * tw
        return 0 if self._needs_full(c.index) else n * f * ho * wo

    # --- run -----------------------------------------------------------------------------------------------------
    def run(self, x: np.ndarray) -> List[np.ndarray]:
        n = x.shape[0]
        if n != self._batch:
            self._allocate(n)
        steps = self.program.steps
        outs: List[Optional[np.ndarray]] = [None] * len(steps)
        for i, s in enumerate(steps):
            xs = [x if j == fi.INPUT else outs[j] for j in s.srcs]
            if i in self.fused_pools:
                outs[i] = self._bufs[i]                      # written by its convolution's epilogue
            elif i in self.convs:
                outs[i] = self._conv(i, self.convs[i], xs[0])
            elif isinstance(s, fi.MaxPoolStep):
                outs[i] = self._pool(i, s, xs[0])
            elif isinstance(s, fi.ConcatStep):
                outs[i] = self._concat(i, s, xs)
            elif isinstance(s, fi.UpsampleStep):
                outs[i] = self._upsample(i, s, xs[0])
            elif i in self.dense:
                outs[i] = self._dense(i, xs[0])
            else:
                outs[i] = fi.run_step(s, xs)
                if i in self.slices:
                    np.copyto(self._bufs[i], outs[i])
        return [np.array(outs[i], copy=True) for i in self.program.outputs]

    def _conv(self, i: int, c: _Conv, x: np.ndarray) -> Optional[np.ndarray]:
        s = c.step
        y = self._bufs[i]
        full = y is not None
        pooled = self._bufs[c.pool] if c.pool is not None else None
        n = x.shape[0]
        f, ho, wo = self.shapes[i]
        pt, pb, pl, pr = s.padding
        dummy = self._work[:0].reshape(0, 0, 0, 0)
        if c.kind == "winograd":
            th, tw = winograd.tiles(ho, wo)
            cin = x.shape[1]
            nt = n * th * tw
            v = self._work[:16 * cin * nt].reshape(16, cin, nt)
            m = self._work[16 * cin * nt:16 * (cin + f) * nt].reshape(16, f, nt)
            winograd.input_transform(x, v, th, tw, pt, pl)
            split_products.matmul(c.w2, v, m)
            winograd.output_transform(m, c.bias, self.dtype.type(c.slope), c.act, th, tw, ho, wo,
                                      y if full else dummy, pooled if pooled is not None else dummy, full,
                                      pooled is not None)
            return y
        z = y if full else self._work[:n * f * ho * wo].reshape(n, f, ho, wo)
        if c.kind == "gemm1x1":
            split_products.matmul(c.w2, x.reshape(n, x.shape[1], -1), z.reshape(n, f, -1))
        elif c.kind == "direct":
            if c.w4.shape[2:] == (3, 3):
                xp = self._padded[i]
                xp[:, :, pt:pt + x.shape[2], pl:pl + x.shape[3]] = x
                conv_direct._direct_3x3(xp, c.w4, z)
            else:
                conv_direct._direct_rows(x, c.w4, z, pt, pl)
        else:
            g = conv_geometry(x.shape, s.weight.shape, s.stride, s.padding, 1, s.groups)
            G = s.groups
            for k in range(n):
                gk = g._replace(n=1)
                cols = im2col(x[k:k + 1], gk)
                if G == 1:
                    split_products.matmul(c.w2, cols, z[k].reshape(f, -1))
                else:
                    split_products.matmul(c.w2.reshape(G, f // G, -1), cols.reshape(G, -1, ho * wo),
                                          z[k].reshape(G, f // G, -1))
        eval_kernels.bias_act_pool(z, c.bias, self.dtype.type(c.slope), c.act, y if full else dummy,
                                   pooled if pooled is not None else dummy, full, pooled is not None)
        return y

    def _pool(self, i: int, s: fi.MaxPoolStep, x: np.ndarray) -> np.ndarray:
        out = self._bufs[i]
        (kh, kw), (sh, sw) = s.size, s.stride
        eval_kernels.max_pool(x, kh, kw, sh, sw, s.padding[0], s.padding[2], out)
        return out

    def _concat(self, i: int, s: fi.ConcatStep, xs: List[np.ndarray]) -> np.ndarray:
        if len(xs) == 1:
            return xs[0]
        out = self._bufs[i]
        off = 0
        for j, a in zip(s.inputs, xs):
            c = a.shape[1]
            if self.slices.get(j, (None,))[0] != i:
                out[:, off:off + c] = a
            off += c
        return out

    def _upsample(self, i: int, s: fi.UpsampleStep, x: np.ndarray) -> np.ndarray:
        out = self._bufs[i]
        n, c, h, w = x.shape
        k = s.stride
        blocks = out.reshape(n, c, h, k, w, k)
        if s.scale != 1.0:
            blocks[...] = (x * x.dtype.type(s.scale))[:, :, :, None, :, None]
        else:
            blocks[...] = x[:, :, :, None, :, None]
        return out

    def _dense(self, i: int, x: np.ndarray) -> np.ndarray:
        wt, b, act, slope = self.dense[i]
        out = self._bufs[i]
        split_products.matmul(x.reshape(x.shape[0], -1), wt, out)
        o4 = out.reshape(out.shape[0], out.shape[1], 1, 1)
        dummy = self._work[:0].reshape(0, 0, 0, 0)
        eval_kernels.bias_act_pool(o4, b, self.dtype.type(slope), act, o4, dummy, True, False)
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
        else:
            shapes[i] = None                                 # a CallStep's: known once it has run
    return shapes


# --- the variant ----------------------------------------------------------------------------------------------------

def compiled(program: fi.EvalProgram) -> CompiledPlan:
    """The plan of ``program``, made on first use (kept while the program lives)."""
    plan = _plans.get(program)
    if plan is None:
        plan = _plans[program] = CompiledPlan(program)
    return plan


def run_compiled(program: fi.EvalProgram, x: np.ndarray) -> List[np.ndarray]:
    """``functional.inference.run_program`` by the program's compiled plan."""
    return compiled(program).run(x)


def supported(program: fi.EvalProgram, x: np.ndarray) -> bool:
    """numba on, a float32 or float64 input of the program's dtype, and every step's shape known before it runs
    (a CallStep's output is read only by CallSteps and outputs)."""
    if not _numba.enabled() or not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
        return False
    if tuple(x.shape[1:]) != tuple(program.input_shape):
        return False
    ws = [s.weight.dtype for s in program.steps if isinstance(s, (fi.ConvStep, fi.DenseStep))]
    if any(d != x.dtype for d in ws):
        return False
    calls = {i for i, s in enumerate(program.steps) if isinstance(s, fi.CallStep)}
    return all(isinstance(s, fi.CallStep) for s in program.steps if any(j in calls for j in s.srcs))


dispatch.register(dispatch.Variant(
    op="eval_program", name="compiled plan", forward=run_compiled, applies=supported, exact=False,
    rtol=1e-4, atol=1e-5, mirrors="functional.inference.run_program",
    doc="batch norm folded, Winograd F(2x2,3x3), fused epilogues and pooling, buffers reused"))
