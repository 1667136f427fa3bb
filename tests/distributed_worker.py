"""Runs under ``mpirun -n N python tests/distributed_worker.py SCENARIO OUT_DIR`` (tests/test_distributed_mpi.py)
or in-process (``run(scenario, out_dir)``) for the one-process reference.

Scenarios train on small synthetic data (no data set needed) and rank 0 writes ``OUT_DIR/<name>.npz`` with the
final state dict:
- ``equality``: the MLP (float32 and float64), LeNet (float32) and a BN MLP with synchronised batch norm
  through ``fit``, 50 steps each; Darknet's mnist-tiny cfg through ``DarknetTrainer`` with synchronised
  batch norm, 50 updates; 2 epochs of the float64 MLP into ``ckpt/`` (resumed elsewhere with one process);
  ``deltaprop train`` on a small fake MNIST into ``cli/``.
- ``raise``: rank 1 raises in the middle of epoch 2 (after epoch 1's checkpoint).
- ``sigkill``: rank 1 kills itself with SIGKILL in the middle of epoch 2.
- ``silent``: rank 1 stops answering (sleeps) at step 3; the others must name it.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

ROWS, BATCH, EPOCHS = 160, 16, 5   # 10 global batches per epoch: 50 steps


def synthetic(n: int = ROWS, shape=(1, 28, 28), classes: int = 10, seed: int = 0, dtype=np.float32):
    g = np.random.default_rng(seed)
    y = g.integers(0, classes, n)
    X = g.standard_normal((n, *shape)).astype(dtype)
    X[np.arange(n), 0, y, y] += 3.0            # a learnable signal
    return X, y.astype(np.int64)


def bn_mlp(dtype):
    from deltaprop import nn
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32, dtype=dtype), nn.BatchNorm1d(32, dtype=dtype), nn.ReLU(),
                         nn.Linear(32, 10, dtype=dtype))


def train_fit(name: str, dtype: str, out_dir: Path, *, epochs: int = EPOCHS, sync_bn: bool = False,
              ckpt_dir=None, resume=None, hook=None):
    import deltaprop as dp
    from deltaprop import models, nn, optim
    from deltaprop.data import DataLoader
    from deltaprop.train import fit
    dp.manual_seed(1)
    model = bn_mlp(dtype) if name == "bn_mlp" else models.build(name, dtype=dtype)
    X, y = synthetic(dtype=np.dtype(dtype))
    loader = DataLoader(X, y, batch_size=BATCH, shuffle=True, seed=3)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS * len(loader))
    loss = nn.CrossEntropyLoss()
    if hook is not None:
        loss = hook(loss)
    fit(model, loss, opt, loader, epochs=epochs, scheduler=sched, scheduler_interval="step", progress=False,
        log=None, out_dir=ckpt_dir, resume=resume, sync_bn=sync_bn)
    return model


def train_darknet(dtype: str, steps: int = 50, sync_bn: bool = True):
    import deltaprop as dp
    from deltaprop import darknet
    from deltaprop.darknet.trainer import DarknetTrainer, one_hot
    dp.manual_seed(2)
    net = darknet.load("mnist-tiny", dtype=dtype, batch=BATCH)
    tr = DarknetTrainer(net, batch=BATCH, subdivisions=2, learning_rate=0.05, max_batches=steps, sync_bn=sync_bn)
    X, y = synthetic(dtype=np.dtype(dtype))
    it = tr.batches(len(X), seed=4)
    for _ in range(steps):
        idx = next(it)
        tr.train_step(X[idx], one_hot(y[idx], 10, X.dtype))
    return net


CLI_ARGS = ["train", "--model", "mlp", "--epochs", "2", "--batch-size", "16", "--seed", "5"]


def write_fake_mnist(directory: Path, n_train: int = 200, n_test: int = 50) -> None:
    """Four IDX files shaped as MNIST's (random digits with a marked pixel per class)."""
    from deltaprop.data.idx import write_idx
    g = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = g.integers(0, 10, n).astype(np.uint8)
        X = g.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        X[np.arange(n), 2 * y, 2 * y] = 255
        write_idx(directory / f"{prefix}-images-idx3-ubyte", X)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", y)


def save(model, path: Path) -> None:
    from deltaprop.distributed import world
    if world().is_main:
        np.savez(path, **model.state_dict())


def run(scenario: str, out_dir: str) -> None:
    out = Path(out_dir)
    if scenario == "equality":
        save(train_fit("mlp", "float32", out), out / "mlp32.npz")
        save(train_fit("mlp", "float64", out), out / "mlp64.npz")
        save(train_fit("lenet", "float32", out), out / "lenet32.npz")
        save(train_fit("bn_mlp", "float64", out, sync_bn=True), out / "bn_mlp64.npz")
        save(train_darknet("float64"), out / "darknet64.npz")
        train_fit("mlp", "float64", out, epochs=2, ckpt_dir=out / "ckpt")
        from deltaprop.cli import main
        from deltaprop.distributed import world
        if world().is_main:
            write_fake_mnist(out / "mnist")
        world().barrier()
        if main(CLI_ARGS + ["--data", str(out / "mnist"), "--out", str(out / "cli")]) != 0:
            raise SystemExit("deltaprop train failed")
    elif scenario in ("raise", "sigkill", "silent"):
        from deltaprop.distributed import world
        rank = world().rank
        calls = {"n": 0}

        def hook(loss):
            inner = loss.forward

            def forward(out, y):
                calls["n"] += 1
                if rank == 1 and scenario == "silent" and calls["n"] == 3:
                    time.sleep(120)
                if rank == 1 and calls["n"] == 15:          # epoch 2, batch 5
                    if scenario == "raise":
                        raise RuntimeError("injected failure on rank 1 at step 15")
                    if scenario == "sigkill":
                        os.kill(os.getpid(), signal.SIGKILL)
                return inner(out, y)
            object.__setattr__(loss, "forward", forward)
            return loss
        train_fit("mlp", "float32", out, ckpt_dir=out / "ckpt", hook=hook)
    else:
        raise SystemExit(f"unknown scenario {scenario}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    run(sys.argv[1], sys.argv[2])
