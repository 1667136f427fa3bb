"""The long fuzz campaign: ``python3 -m tests.fuzz --minutes N [--target cfg|weights|idx|checkpoint]``.

Runs the targets of ``tests/fuzz/targets.py`` in a forked worker (restarted every ``--per-worker`` inputs)
with a per-input time cap (``--seconds`` of the worker's CPU time: an interval timer on its CPU clock, and
a hard kill by the parent 10 s past it) and a memory cap (``--megabytes`` over the worker's starting address
space, ``resource.setrlimit(RLIMIT_AS)``). Input i of a target is generated from ``random.Random(f"{seed}/{target}/{i}")`` alone.
Every input that raises anything but the project's own errors, trips a cap, or kills the worker is
written to ``--corpus/<target>/`` (the input, and a .txt with what happened): the corpus holds failing
inputs only, which the test suite replays. The counts go to stdout, one JSON line per target, and with
``--summary FILE`` to that file too. ``--inputs N`` stops each target after N inputs; ``--minutes`` is the
time for all targets together, shared equally.
"""
from __future__ import annotations

import os

if __name__ == "__main__":   # run as the campaign, not imported by the test suite (whose threads it would change)
    for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_v, "1")  # one core per worker: the campaign runs beside other work

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

# the targets import the tests' shared helpers (darknet_testutil) as the test modules do, from tests/
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from .targets import TARGETS, run_one  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "corpus"


class InputTimeout(BaseException):
    """Raised in the worker by the interval timer: the input ran past its time cap."""


#: The clock of the time cap: the worker's CPU time (user + system, one thread). The campaign runs beside
#: other work (``nice -n 19``) and may be paused (SIGSTOP) while others measure: wall time then charges an
#: input for the time it waited, CPU time only for the work it did. Wall time is reported beside it.
TIMER, TIMER_SIGNAL = signal.ITIMER_PROF, signal.SIGPROF
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (/proc/pid/stat), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _on_alarm(signum, frame):
    raise InputTimeout()


def _vm_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def _save(corpus: Path, target: str, index: int, data: bytes, what: str) -> None:
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    name = f"{index}-{hashlib.sha1(data).hexdigest()[:12]}"
    (d / f"{name}.bin").write_bytes(data)
    (d / f"{name}.txt").write_text(what)


def worker(target, name: str, seed: str, start: int, stop: int, deadline: float, fd: int, seconds: float,
           megabytes: int, corpus: Path) -> None:
    """Run inputs start..stop-1 (until ``deadline``), reporting each on ``fd``: ``B i`` before, ``E i outcome
    cpu_seconds wall_seconds`` after, ``R kib`` (resident peak growth) at the end."""
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    limit = _vm_bytes() + megabytes * 2 ** 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(TIMER_SIGNAL, _on_alarm)
    for i in range(start, stop):
        if time.time() > deadline:
            break
        data = target.generate(random.Random(f"{seed}/{name}/{i}"))
        os.write(fd, f"B {i}\n".encode())
        t0, c0 = time.perf_counter(), time.process_time()
        signal.setitimer(TIMER, seconds)
        try:
            outcome = run_one(target, data)
        except InputTimeout:
            outcome = "TIMEOUT"
        except BaseException as e:  # noqa: BLE001 - a finding: anything but the project's own errors
            outcome = "BUG:" + type(e).__name__
            signal.setitimer(TIMER, 0)
            _save(corpus, name, i, data, traceback.format_exc())
        finally:
            signal.setitimer(TIMER, 0)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        if outcome == "TIMEOUT":
            _save(corpus, name, i, data, f"ran past the {seconds} s cap: {cpu:.3f} s of CPU time, {wall:.3f} s wall")
        os.write(fd, f"E {i} {outcome} {cpu:.6f} {wall:.6f}\n".encode())
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss
    os.write(fd, f"R {grew}\n".encode())


def campaign(name: str, inputs: int, deadline: float, args) -> dict:
    target = TARGETS[name]()
    for j in range(args.warmup):  # compile every kernel in the parent: workers inherit it
        try:
            run_one(target, target.generate(random.Random(f"warmup/{name}/{j}")))
        except BaseException:  # noqa: BLE001 - counted in the campaign proper, not here
            pass
    counts: Counter = Counter()
    slowest, slowest_wall, rss_kib, done, i = 0.0, 0.0, 0, 0, 0
    while i < inputs and time.time() < deadline:
        stop = min(inputs, i + args.per_worker)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(r)
            code = 0
            try:
                worker(target, name, args.seed, i, stop, deadline, w, args.seconds, args.megabytes, args.corpus)
            except BaseException:  # noqa: BLE001
                traceback.print_exc()
                code = 1
            os._exit(code)
        os.close(w)
        buf, current, cpu0 = b"", None, 0.0
        with os.fdopen(r, "rb", buffering=0) as pipe:
            while True:
                ready, _, _ = select.select([pipe], [], [], 1.0)
                if not ready:
                    if current is not None and _cpu_seconds(pid) - cpu0 > args.seconds + 10:
                        os.kill(pid, signal.SIGKILL)  # stuck outside Python: a hard cap
                    continue
                chunk = pipe.read(65536)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    kind, *rest = line.decode().split()
                    if kind == "B":
                        current, cpu0 = int(rest[0]), _cpu_seconds(pid)
                    elif kind == "E":
                        counts[rest[1]] += 1
                        slowest, slowest_wall = max(slowest, float(rest[2])), max(slowest_wall, float(rest[3]))
                        done, current, i = done + 1, None, int(rest[0]) + 1
                    else:
                        rss_kib = max(rss_kib, int(rest[0]))
        _, status = os.waitpid(pid, 0)
        if current is not None:  # the worker died (or was killed) on this input
            counts["CRASH"] += 1
            data = target.generate(random.Random(f"{args.seed}/{name}/{current}"))
            _save(args.corpus, name, current, data, f"worker ended with status {status} on this input")
            done, i = done + 1, current + 1
        elif i < stop and time.time() < deadline:
            # the worker stopped early between inputs (the generator itself failed: its traceback is on
            # stderr): counted, so that a campaign cut short cannot pass for a clean one, and not looped on
            counts["WORKER_EXIT"] += 1
            print(f"{name}: worker ended with status {status} after input {i - 1}; skipping to {stop}",
                  file=sys.stderr, flush=True)
            i = stop
    bad = {k: v for k, v in counts.items() if k in ("CRASH", "TIMEOUT", "WORKER_EXIT") or k.startswith("BUG:")}
    return {"target": name, "inputs": done, "outcomes": dict(sorted(counts.items())), "findings": sum(bad.values()),
            "slowest_cpu_s": round(slowest, 4), "slowest_wall_s": round(slowest_wall, 4),
            "max_worker_rss_growth_mib": round(rss_kib / 1024, 1),
            "caps": {"seconds": args.seconds, "megabytes": args.megabytes}, "seed": args.seed}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m tests.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0, help="time for all targets together (default 5)")
    p.add_argument("--target", choices=sorted(TARGETS), action="append",
                   help="a target to run (repeatable; default all)")
    p.add_argument("--inputs", type=int, default=10 ** 9, help="stop each target after this many inputs")
    p.add_argument("--seconds", type=float, default=1.0, help="CPU-time cap of one input (default 1)")
    p.add_argument("--megabytes", type=int, default=256, help="memory cap of one worker above its start (256)")
    p.add_argument("--per-worker", type=int, default=5000, help="inputs per forked worker (default 5000)")
    p.add_argument("--warmup", type=int, default=300, help="inputs run first in the parent, not counted")
    p.add_argument("--seed", default="0")
    p.add_argument("--corpus", type=Path, default=CORPUS, help=f"where failing inputs go (default {CORPUS})")
    p.add_argument("--summary", type=Path, help="also write the counts of every target to this JSON file")
    args = p.parse_args(argv)
    names = args.target or list(TARGETS)
    start = time.time()
    results = []
    for k, name in enumerate(names):
        share = (start + args.minutes * 60 - time.time()) / (len(names) - k)
        res = campaign(name, args.inputs, time.time() + share, args)
        res["seconds"] = round(time.time() - start - sum(r["seconds"] for r in results), 1)
        results.append(res)
        print(json.dumps(res), flush=True)
    if args.summary is not None:
        args.summary.write_text(json.dumps(results, indent=1) + "\n")
    return 1 if any(r["findings"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
