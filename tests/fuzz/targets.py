"""The fuzz targets: for each parser, a cheap generator of hostile inputs (mostly valid files, mutated) and a
runner that feeds one input to deltaprop and checks what comes back.

An input is bytes (what a file would hold), generated from a ``random.Random`` alone, so an input index and
a seed reproduce it. ``run(data)`` returns ``"ok"`` when the input loads (and then checks a property: what
loads writes back the same), or the name of the project's error it raised; any other exception escapes:
that is a finding. The same targets drive the hypothesis tests (tests/test_hostile_fuzz.py) and the long
campaign (``python3 -m tests.fuzz``).
"""
from __future__ import annotations

import copy
import gzip
import io as _io
import json
import math
import random
import warnings
import zlib
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from darknet_testutil import CLS_CFG, WEIGHTS_VERSIONS, weights_bytes
from deltaprop import backend
from deltaprop.errors import DeltapropError

from .common import HOSTILE_TEXT, Scratch, _tmpdir, mutate_bytes  # noqa: F401  (the campaign's shared helpers)

#: What a built network may take while fuzzing (far below the default budget: inputs stay cheap).
BUDGET = 16 * 2 ** 20
#: What an IDX header may declare while fuzzing.
IDX_MAX_BYTES = 64 * 2 ** 20

HOSTILE_INTS = [0, 1, -1, 2, 3, 7, 255, 256, 65535, 65536, 2 ** 31 - 1, 2 ** 31, -2 ** 31, 2 ** 32 - 1,
                2 ** 32, 10 ** 9, 2 ** 63, 10 ** 30]
def gzip_bomb(head: bytes, zeros_mib: int) -> bytes:
    """A gzip stream of ``head`` followed by ``zeros_mib`` MiB of zero bytes, about 1 KiB per MiB: one
    deflate block of a MiB of zeros after a full flush is self-contained, so it is repeated instead of
    compressed again. The trailer's CRC is not that of the data (a reader that stops early never sees it)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    block = _zero_block()
    end = c.flush(zlib.Z_FINISH)
    size = (len(head) + zeros_mib * 2 ** 20) & 0xFFFFFFFF
    gz_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return gz_header + first + block * zeros_mib + end + (0).to_bytes(4, "little") + size.to_bytes(4, "little")


_ZERO_BLOCK: List[bytes] = []


def _zero_block() -> bytes:
    if not _ZERO_BLOCK:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        c.compress(b"")
        c.flush(zlib.Z_FULL_FLUSH)
        _ZERO_BLOCK.append(c.compress(bytes(2 ** 20)) + c.flush(zlib.Z_FULL_FLUSH))
    return _ZERO_BLOCK[0]


# --- cfg + planner --------------------------------------------------------------------------------

ACTS = ["leaky", "linear", "logistic", "relu", "tanh", "elu", "ramp", "plse", "lhtan", "mish", "swish"]
CFG_KEYS: Dict[str, Dict[str, Callable[[random.Random], Any]]] = {
    "convolutional": {"filters": lambda r: r.randint(1, 8), "size": lambda r: r.randint(1, 5),
                      "stride": lambda r: r.randint(1, 3), "pad": lambda r: r.randint(0, 1),
                      "padding": lambda r: r.randint(0, 2), "groups": lambda r: r.randint(1, 2),
                      "batch_normalize": lambda r: r.randint(0, 1), "activation": lambda r: r.choice(ACTS)},
    "connected": {"output": lambda r: r.randint(1, 8), "batch_normalize": lambda r: r.randint(0, 1),
                  "activation": lambda r: r.choice(ACTS)},
    "maxpool": {"size": lambda r: r.randint(1, 4), "stride": lambda r: r.randint(1, 3),
                "padding": lambda r: r.randint(0, 3)},
    "avgpool": {}, "logistic": {},
    "softmax": {"groups": lambda r: r.randint(1, 2), "temperature": lambda r: r.choice(["1", "0.5", "2"])},
    "cost": {"type": lambda r: r.choice(["sse", "L1", "smooth", "masked"]), "scale": lambda r: r.choice(["1", ".5"])},
    "dropout": {"probability": lambda r: r.choice(["0", ".2", ".5", ".9"])},
    "route": {"layers": lambda r: r.choice(["-1", "-2", "-1,-3", "0", "1,-1", "-1,0", "-4"])},
    "shortcut": {"from": lambda r: r.randint(-4, -1), "activation": lambda r: r.choice(ACTS)},
    "upsample": {"stride": lambda r: r.randint(1, 3), "scale": lambda r: r.choice(["1", "0.5"])},
}
CFG_KINDS = sorted(CFG_KEYS) + ["yolo"]
REQUIRED = {"route": "layers", "shortcut": "from"}
ANY_KEYS = sorted({k for keys in CFG_KEYS.values() for k in keys} |
                  {"width", "height", "channels", "inputs", "batch", "num", "classes", "max", "mask", "anchors"})


def generate_cfg(rnd: random.Random) -> bytes:
    """A mostly valid small cfg; now and then a hostile value, an unknown key or section, a broken line,
    or byte-level damage."""
    lines = ["[net]"]
    for key, hi in (("width", 20), ("height", 20), ("channels", 3), ("batch", 3)):
        if rnd.random() < 0.95:
            lines.append(f"{key}={rnd.randint(1, hi)}")
    for _ in range(rnd.randint(1, 7)):
        kind = rnd.choice(CFG_KINDS)
        if kind == "yolo":
            classes, num = rnd.randint(0, 3), rnd.randint(1, 3)
            mask = rnd.sample(range(num), rnd.randint(1, num))
            filters = len(mask) * (classes + 5) + (rnd.random() < 0.05)
            lines += ["[convolutional]", f"filters={filters}", "size=1", "activation=linear", "[yolo]",
                      f"classes={classes}", f"num={num}", "mask=" + ",".join(map(str, mask))]
            if rnd.random() < 0.5:
                lines.append("anchors=" + ",".join(str(rnd.randint(1, 30)) for _ in range(2 * num)))
            continue
        lines.append(f"[{kind}]")
        keys = CFG_KEYS[kind]
        chosen = [k for k in keys if rnd.random() < 0.5]
        if kind in REQUIRED and REQUIRED[kind] not in chosen:
            chosen.append(REQUIRED[kind])
        lines += [f"{k}={keys[k](rnd)}" for k in chosen]
    for _ in range(rnd.choice([0, 0, 0, 1, 1, 2, 3])):  # line-level mutations
        op = rnd.randrange(7)
        i = rnd.randrange(1, len(lines) + 1)
        if op == 0:  # a hostile value for an existing key
            j = rnd.randrange(len(lines))
            if "=" in lines[j]:
                lines[j] = lines[j].split("=")[0] + "=" + rnd.choice(HOSTILE_TEXT)
        elif op == 1:  # any known key of any section, hostile value
            key = rnd.choice(ANY_KEYS)
            lines.insert(i, f"{key}={rnd.choice(HOSTILE_TEXT)}")
        elif op == 2:
            lines.insert(i, rnd.choice(["[region]", "[bogus]", "[net]", "[", "]", "[]", "bogus_key=1", "novalue",
                                        "# comment", ";c", "=1", "[upsample]\nstride=2147483647"]))
        elif op == 3:
            del lines[i - 1]
        elif op == 4:
            lines.insert(i, lines[rnd.randrange(len(lines))])
        elif op == 5:  # many copies of one section (growth)
            lines.insert(i, "\n".join([rnd.choice(["[upsample]\nstride=" + rnd.choice(["2", "3", "2147483647"]),
                                                   "[route]\nlayers=-1,-1", "[maxpool]"])] * rnd.randint(2, 40)))
        else:
            lines.insert(i, "[yolo]\nclasses=1\nnum=" + rnd.choice(["50000000", "2147483647", "4096", "4097"])
                         + "\nmask=0\nanchors=1,1")
    text = rnd.choice(["\n", "\n", "\r\n", " \n"]).join(lines) + "\n"
    data = text.encode("utf-8")
    if rnd.random() < 0.05:
        data = mutate_bytes(rnd, data, rnd.randint(1, 3))
    return data


class CfgTarget:
    """Parse a cfg file, plan it, build it within ``BUDGET``; a network that builds runs one forward pass
    and writes back a cfg that builds the same network."""
    name = "cfg"

    def __init__(self) -> None:
        self.scratch = Scratch(".cfg")

    def generate(self, rnd: random.Random) -> bytes:
        return generate_cfg(rnd)

    def run(self, data: bytes) -> str:
        from deltaprop import darknet
        path = self.scratch.write(data)
        plan = darknet.plan_cfg(path)
        if plan.memory_bytes() > BUDGET:
            darknet.check_budget(plan, BUDGET)  # must refuse it
            raise AssertionError("check_budget accepted a plan over the budget")
        net = darknet.load(path, budget=BUDGET)
        text = net.cfg_text()
        assert darknet.load_cfg_text(text, budget=BUDGET).cfg_text() == text, "cfg round trip differs"
        x = np.random.default_rng(0).random((1,) + net.input_shape, dtype=np.float32)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            net.predict(x)
        return "ok"


# --- .weights -------------------------------------------------------------------------------------

class WeightsTarget:
    """Load ``.weights`` bytes into a small classifier (``darknet_testutil.CLS_CFG``: conv with batch norm,
    conv, connected, connected with batch norm); what loads writes back byte for byte."""
    name = "weights"

    def __init__(self) -> None:
        self.valid = [weights_bytes(v) for v in WEIGHTS_VERSIONS]

    def generate(self, rnd: random.Random) -> bytes:
        data = bytearray(rnd.choice(self.valid))
        op = rnd.randrange(8)
        if op == 0:
            return bytes(rnd.randrange(256) for _ in range(rnd.randrange(64)))
        if op == 1:
            return bytes(data[:rnd.randrange(len(data) + 1)])
        if op == 2:
            return bytes(data) + bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 64)))
        if op == 3:  # hostile header words
            for _ in range(rnd.randint(1, 3)):
                w = rnd.randrange(5)
                data[4 * w:4 * w + 4] = (rnd.choice(HOSTILE_INTS) & 0xFFFFFFFF).to_bytes(4, "little")
            return bytes(data)
        if op == 4:  # a non-finite float in the body
            i = rnd.randrange(16, len(data) - 3) & ~3
            data[i:i + 4] = np.array([rnd.choice([np.nan, np.inf, -np.inf, 3e38])], "<f4").tobytes()
            return bytes(data)
        if op == 5:
            return bytes(data)
        return mutate_bytes(rnd, bytes(data), rnd.randint(1, 4))

    def run(self, data: bytes) -> str:
        from deltaprop import darknet
        net = darknet.load_cfg_text(CLS_CFG)
        darknet.load_weights_bytes(net, data)
        assert darknet.weights_to_bytes(net) == data, "a full load does not write back the same bytes"
        return "ok"


# --- IDX ------------------------------------------------------------------------------------------

IDX_CODES = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]


class IdxTarget:
    """Read an IDX file (plain or gzipped) with ``read_idx`` and bytes with ``parse_idx``; what reads
    encodes back to the same bytes."""
    name = "idx"

    def __init__(self) -> None:
        self.scratch = Scratch(".idx")

    def generate(self, rnd: random.Random) -> bytes:
        from deltaprop.data.idx import IDX_TYPES
        code = rnd.choice(IDX_CODES)
        ndim = rnd.choice([0, 1, 1, 2, 3, 3, 4])
        shape = [rnd.randint(0, 5) for _ in range(ndim)]
        n = math.prod(shape) * IDX_TYPES[code].itemsize
        body = bytes(rnd.randrange(256) for _ in range(min(n, 64))) * (n // 64 + 1)
        head = bytearray([0, 0, code, ndim]) + b"".join(s.to_bytes(4, "big") for s in shape)
        data = bytes(head) + body[:n]
        op = rnd.randrange(10)
        if op == 0 and ndim:  # a hostile dimension
            i = 4 + 4 * rnd.randrange(ndim)
            data = data[:i] + (rnd.choice(HOSTILE_INTS) & 0xFFFFFFFF).to_bytes(4, "big") + data[i + 4:]
        elif op == 1:  # a hostile magic
            data = bytes([rnd.choice([0, 0, 1]), 0, rnd.randrange(256), rnd.choice([ndim, rnd.randrange(256)])]) + data[4:]
        elif op == 2:
            data = data[:rnd.randrange(len(data) + 1)]
        elif op == 3:
            data = data + bytes(rnd.randint(1, 16))
        elif op == 4:
            data = mutate_bytes(rnd, data, rnd.randint(1, 3))
        elif op == 5:  # every dimension large: products beyond int64
            dims = [rnd.choice([65536, 2 ** 31 - 1, 2 ** 16 + 1]) for _ in range(rnd.randint(1, 6))]
            data = bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
        if rnd.random() < 0.35:
            if rnd.random() < 0.1:
                return gzip_bomb(data, rnd.randint(1, 64))
            data = gzip.compress(data, compresslevel=1, mtime=0)
            if rnd.random() < 0.2:
                data = mutate_bytes(rnd, data, 1)
        return data

    def run(self, data: bytes) -> str:
        from deltaprop.data.idx import encode_idx, parse_idx, read_idx
        a = read_idx(self.scratch.write(data), max_bytes=IDX_MAX_BYTES)
        raw = data if data[:2] != b"\x1f\x8b" else gzip.decompress(data)
        assert encode_idx(a) == raw, "what reads does not encode back to the same bytes"
        if data[:2] != b"\x1f\x8b":
            assert np.array_equal(parse_idx(data, max_bytes=IDX_MAX_BYTES), a, equal_nan=a.dtype.kind == "f")
        return "ok"


# --- checkpoints ----------------------------------------------------------------------------------

HOSTILE_JSON: List[Any] = [None, True, False, 0, 1, -1, 2, 2 ** 31, 2 ** 64, 10 ** 30, 0.5, 1e308, -1e308,
                           float("nan"), float("inf"), "", "x", "float64", "MT19937", [], {}, [1, 2, 3], [0],
                           {"a": 1}, {"__array__": "optim/nope"}, {"__array__": 5}, {"__tuple__": 3},
                           {"__tuple__": [1, [2]]}, {"__items__": [[1]]}, {"__items__": [[[1], 2]]},
                           {"__items__": 7}, {"kind": "registry", "model": "mlp"}, {"kind": "sequential"},
                           {"kind": "darknet_cfg", "cfg": "[net]\nwidth=100000\nheight=100000\nchannels=3\n"
                                                          "[convolutional]\nfilters=64\n"}]


def _hostile_json(rnd: random.Random, *extra: Any) -> Any:
    """A copy of one of ``HOSTILE_JSON`` (or ``extra``): never the shared object itself, which a later edit of
    the same input could change (or put inside itself: a circular reference ``json.dumps`` refuses), making
    inputs depend on what was generated before them."""
    return copy.deepcopy(rnd.choice(HOSTILE_JSON + list(extra)))


def _deep(depth: int) -> Any:
    v: Any = 1
    for _ in range(depth):
        v = [v]
    return v


def _paths(obj: Any, prefix: Tuple = (), out: List[Tuple] = None, depth: int = 0) -> List[Tuple]:
    out = [] if out is None else out
    if depth > 8:
        return out
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append(prefix + (k,))
            _paths(v, prefix + (k,), out, depth + 1)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append(prefix + (i,))
            _paths(v, prefix + (i,), out, depth + 1)
    return out


def _copy(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


class CheckpointTarget:
    """Load a checkpoint file with ``load_model`` (rebuilding its architecture) and, when that works, into
    the rebuilt model with an optimizer and a scheduler and the RNG restored; what loads keeps the file's
    values (up to the rounding of the model's dtype: no NaN cast into an integer count)."""
    name = "checkpoint"

    def __init__(self) -> None:
        from deltaprop import darknet, io, models, nn, optim
        self.scratch = Scratch(".npz")
        state = backend.get_rng_state()
        bases = []
        m = models.build("mlp", in_features=4, hidden=[3], num_classes=2)
        opt = optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        bases.append((m, opt, optim.lr_scheduler.StepLR(opt, step_size=2)))
        s = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
        opt = optim.Adam(s.parameters(), lr=0.01)
        bases.append((s, opt, optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 4])))
        d = darknet.load_cfg_text("[net]\nwidth=3\nheight=3\nchannels=1\n[convolutional]\nfilters=2\nsize=3\n"
                                  "pad=1\nbatch_normalize=1\nactivation=leaky\n[avgpool]\n")
        bases.append((d, optim.SGD(d.parameters(), lr=0.1), None))
        self.bases = []
        for model, opt, sched in bases:
            model.train()
            x = np.ones((2,) + ((4,) if model is m else (3,) if model is s else (1, 3, 3)), np.float32)
            out = model(x)
            out = out[0] if isinstance(out, list) else out
            model.backward(np.ones_like(out))
            opt.step()
            if sched is not None:
                sched.step()
            path = self.scratch.write(b"")
            io.save_checkpoint(path, model, opt, sched, epoch=2, step=5, history=[{"epoch": 1, "loss": 0.5}],
                               extra={"preprocess": {"mean": np.zeros(2)}, "ids": {1: "a"}})
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(arrays.pop("__meta__").tobytes())
            self.bases.append((meta, arrays))
        backend.set_rng_state(state)

    def generate(self, rnd: random.Random) -> bytes:
        meta, arrays = self.bases[rnd.randrange(len(self.bases))]
        meta, arrays = _copy(meta), dict(arrays)
        raw_meta = None
        for _ in range(rnd.choice([0, 1, 1, 1, 2, 3])):
            op = rnd.randrange(10)
            paths = _paths(meta)
            if op <= 3 and paths:  # replace a value anywhere
                self._set(meta, rnd.choice(paths), _hostile_json(rnd, _deep(rnd.choice([5, 40, 200]))))
            elif op == 4 and paths:  # delete a key or an entry
                self._delete(meta, rnd.choice(paths))
            elif op == 5:  # an unknown key somewhere
                tgt = rnd.choice([p for p in paths if isinstance(self._get(meta, p), dict)] or [()])
                self._get(meta, tgt)["bogus_" + str(rnd.randrange(3))] = _hostile_json(rnd)
            elif op == 6 and arrays:  # an array of another dtype or shape
                k = rnd.choice(sorted(arrays))
                a = arrays[k]
                change = rnd.choice([lambda: a.astype(str), lambda: a.astype(bool), lambda: a.astype(np.int64),
                                     lambda: a.reshape(-1)[:1], lambda: np.full(a.shape, np.nan, np.float32),
                                     lambda: np.zeros((2, 2, 2)), lambda: a.astype(np.complex64)])
                try:
                    arrays[k] = change()
                except (ValueError, TypeError):  # an entry already turned into strings
                    arrays[k] = np.zeros(1)
            elif op == 7 and arrays:
                if rnd.random() < 0.5:
                    del arrays[rnd.choice(sorted(arrays))]
                else:
                    arrays[rnd.choice(["model/extra", "optim/x", "stray"])] = np.zeros(3)
            elif op == 8:  # raw metadata text
                text = json.dumps(meta)
                raw_meta = rnd.choice([text.replace("2", "1" * 5000, 1), text.replace("0.1", "NaN", 1),
                                       "[" * 5000 + "]" * 5000, text[:rnd.randrange(len(text))], "[]", "null",
                                       text.replace('"epoch": 2', '"epoch": Infinity'), "\udcff"])
            else:  # version, format
                meta[rnd.choice(["version", "format", "epoch", "step"])] = _hostile_json(rnd)
        buf = _io.BytesIO()
        raw = (raw_meta if raw_meta is not None else json.dumps(meta)).encode("utf-8", "surrogatepass")
        np.savez(buf, __meta__=np.frombuffer(raw, np.uint8), **arrays)
        data = buf.getvalue()
        if rnd.random() < 0.08:
            data = mutate_bytes(rnd, data, rnd.randint(1, 3))
        return data

    @staticmethod
    def _get(obj: Any, path: Tuple) -> Any:
        for k in path:
            obj = obj[k]
        return obj

    def _set(self, obj: Any, path: Tuple, value: Any) -> None:
        self._get(obj, path[:-1])[path[-1]] = value

    def _delete(self, obj: Any, path: Tuple) -> None:
        parent = self._get(obj, path[:-1])
        del parent[path[-1]]

    def run(self, data: bytes) -> str:
        from deltaprop import io, optim
        path = self.scratch.write(data)
        state = backend.get_rng_state()
        try:
            ck = io.load_checkpoint(path)
            params = list(ck.model.parameters())
            groups = (ck.optimizer_state or {}).get("param_groups") or [{}]
            opt = optim.Adam(params) if "betas" in groups[0] else optim.SGD(params, lr=0.1, momentum=0.9 if groups[0].get("momentum") else 0.0)
            if "milestones" in (ck.scheduler_state or {}):
                sched = optim.lr_scheduler.MultiStepLR(opt, milestones=[1])
            else:
                sched = optim.lr_scheduler.StepLR(opt, step_size=2)
            io.load_checkpoint(path, ck.model, opt, sched, restore_rng=True)
        finally:
            backend.set_rng_state(state)
        for key, value in ck.model.state_dict().items():
            saved = np.asarray(ck.model_state[key])
            tol = 0.0 if value.dtype.kind in "biu" else float(np.finfo(value.dtype).eps)
            assert np.allclose(value.astype(np.float64), saved.astype(np.float64), rtol=tol, atol=0, equal_nan=True), \
                f"{key}: the loaded values differ from the file's ({saved.dtype} into {value.dtype})"
        return "ok"


TARGETS = {"cfg": CfgTarget, "weights": WeightsTarget, "idx": IdxTarget, "checkpoint": CheckpointTarget}
from .data_targets import DATA_TARGETS  # noqa: E402  (label files, .data files, image headers)
TARGETS.update(DATA_TARGETS)


def run_one(target, data: bytes) -> str:
    """``target.run(data)``; the project's own errors become their class name, anything else escapes."""
    try:
        return target.run(data)
    except DeltapropError as e:
        return type(e).__name__
