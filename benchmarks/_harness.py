"""A small benchmark harness: time trials, summarise them, emit one JSON line per case.

A *case* is a named workload with fixed parameters and a ``run`` callable that performs one
*trial* and returns a ``Trial`` (how many operations, how much wall and CPU time, optionally one
latency sample per operation). The harness runs ``warmup`` untimed trials, then ``repeats`` timed
ones, and reports the median throughput (with min and max), the worst trial's CPU share (how much
of the wall time the process actually ran: under ~0.9 other load disturbed it), throughput per CPU
second, latency percentiles pooled over the timed trials, and the median of any extra figures.

Each case prints ONE JSON line to stdout (and appends it to the results file); progress and the
closing human table go to stderr, so stdout stays machine-readable (``... | jq``). Figures are
only comparable within one machine and one run: the JSON records the Python version, CPU count
and commit so that mixing runs is at least visible.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "Case",
    "Settings",
    "Stopwatch",
    "Target",
    "Trial",
    "latency_summary",
    "main",
    "run_cases",
    "now_ns",
    "percentile",
    "free_port",
    "raw_fsync_us",
    "stop_process",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "results.jsonl"

now_ns = time.perf_counter_ns


class Stopwatch:
    """Started when made; ``read()`` gives (wall ns, process CPU ns) since then."""

    __slots__ = ("wall0", "cpu0")

    def __init__(self) -> None:
        self.wall0 = now_ns()
        self.cpu0 = time.process_time_ns()

    def read(self) -> tuple[int, int]:
        return now_ns() - self.wall0, time.process_time_ns() - self.cpu0


@dataclass(frozen=True, slots=True)
class Trial:
    """What one timed run of a case measured: ``ops`` operations in ``elapsed_ns`` of wall time,
    of which the process spent ``cpu_ns`` on a CPU (from a ``Stopwatch``)."""

    ops: int
    elapsed_ns: int
    cpu_ns: int
    latencies_ns: Sequence[int] = ()
    extra: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Target:
    """A row of the targets table (docs/targets.md) a case's headline figure is held against."""

    workload: str
    minimum: float
    assumes: str = "fsync before the acknowledgement"


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    params: Mapping[str, Any]
    run: Callable[[], Trial]
    unit: str = "ops/s"
    target: Target | None = None
    # Why a met/not-met verdict does not carry over (e.g. the store does not fsync).
    caveat: str | None = None

    @property
    def label(self) -> str:
        shown = ",".join(f"{k}={v}" for k, v in self.params.items() if k in _LABEL_PARAMS)
        return f"{self.name}[{shown}]" if shown else self.name


_LABEL_PARAMS = ("store", "producers", "concurrency", "metrics")
# Below this CPU time / wall time a trial was slowed by other processes, not by the engine.
BUSY_CPU_SHARE = 0.9


@dataclass(frozen=True, slots=True)
class Settings:
    quick: bool
    warmup: int
    repeats: int


# ---------------------------------------------------------------------- shared probes


def raw_fsync_us(directory: Path, rounds: int) -> float:
    """Median wall time of one 100-byte write + fsync in ``directory``: the disk's floor now."""
    path = directory / "fsync-probe.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    samples = []
    try:
        for _ in range(rounds):
            t0 = now_ns()
            os.write(fd, b"x" * 100)
            os.fsync(fd)
            samples.append(now_ns() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(samples) / 1_000


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the benchmarks bind nothing else)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(process: subprocess.Popen[Any], timeout_s: float) -> None:
    """SIGTERM a child the benchmark started, then SIGKILL it if it has not exited in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)


# ---------------------------------------------------------------------- statistics


def percentile(sorted_samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted samples (p in 0..100)."""
    if not sorted_samples:
        raise ValueError("no samples")
    rank = max(1, math.ceil(p / 100 * len(sorted_samples)))
    return sorted_samples[rank - 1]


def latency_summary(samples_ns: Sequence[int]) -> dict[str, float]:
    """Mean, p50 / p95 / p99 and max in microseconds."""
    ordered = sorted(samples_ns)
    out = {f"p{p}_us": percentile(ordered, p) / 1_000 for p in (50, 95, 99)}
    out["mean_us"] = statistics.fmean(ordered) / 1_000
    out["max_us"] = ordered[-1] / 1_000
    return {k: round(v, 2) for k, v in out.items()}


def summarize(trials: Sequence[Trial]) -> dict[str, float]:
    """Median throughput (with min and max), the worst trial's CPU share, throughput per CPU
    second, pooled latency percentiles and the median of each extra figure."""
    rates = [t.ops / (t.elapsed_ns / 1e9) for t in trials]
    figures: dict[str, float] = {
        "ops_per_s": round(statistics.median(rates), 1),
        "ops_per_s_min": round(min(rates), 1),
        "ops_per_s_max": round(max(rates), 1),
        "elapsed_s": round(statistics.median(t.elapsed_ns for t in trials) / 1e9, 4),
        "ops": trials[0].ops,
        # The cases never sleep: a share well under 1 means the process waited for a CPU.
        "cpu_share": round(min(t.cpu_ns / t.elapsed_ns for t in trials), 3),
        "ops_per_cpu_s": round(statistics.median(t.ops / (max(1, t.cpu_ns) / 1e9)
                                                 for t in trials), 1),
    }
    latencies = [x for t in trials for x in t.latencies_ns]
    if latencies:
        figures.update(latency_summary(latencies))
    for key in trials[0].extra:
        figures[key] = round(statistics.median(t.extra[key] for t in trials), 4)
    return figures


def measure(case: Case, settings: Settings) -> list[Trial]:
    for _ in range(settings.warmup):
        case.run()
    trials = []
    for _ in range(settings.repeats):
        gc.collect()  # start each trial from the same heap; gc stays enabled, as in production
        trials.append(case.run())
    return trials


# ---------------------------------------------------------------------- the record


def git_commit() -> tuple[str, bool | None]:
    """Short HEAD and whether tracked files differ from it (read-only git calls)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # never refresh the index from here
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, env=env,
                                capture_output=True, text=True, timeout=5, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                                timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
    return commit.stdout.strip() or "unknown", bool(status.stdout.strip())


def environment() -> dict[str, Any]:
    commit, dirty = git_commit()
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(terse=True),
        "cpu_count": os.cpu_count(),
        "commit": commit,
        "git_dirty": dirty,
    }


def make_record(case: Case, figures: Mapping[str, float], settings: Settings,
                env: Mapping[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "case": case.name,
        "params": dict(case.params),
        "unit": case.unit,
        "figures": dict(figures),
        "quick": settings.quick,
        "warmup": settings.warmup,
        "repeats": settings.repeats,
    }
    if case.target is not None:
        ratio = figures["ops_per_s"] / case.target.minimum
        record["target"] = {"workload": case.target.workload, "minimum": case.target.minimum,
                            "assumes": case.target.assumes, "source": "docs/targets.md"}
        record["ratio_to_target"] = round(ratio, 3)
        record["target_met"] = ratio >= 1
        record["caveat"] = case.caveat
    record.update(env)
    record["timestamp"] = datetime.now(UTC).isoformat(timespec="seconds")
    return record


# ---------------------------------------------------------------------- the table


def _row(case: Case, record: Mapping[str, Any]) -> list[str]:
    figures = record["figures"]
    target, verdict = "-", "-"
    if case.target is not None:
        target = f">= {case.target.minimum:,.0f}"
        mark = "*" if case.caveat else ""
        met = "met" if record["target_met"] else "not met"
        verdict = f"{met}{mark} ({record['ratio_to_target']:.2f}x)"
    busy = "!" if figures["cpu_share"] < BUSY_CPU_SHARE else ""
    row = [case.label, f"{figures['ops_per_s']:,.0f}", case.unit, target, verdict,
           f"{figures['cpu_share']:.2f}{busy}", f"{figures['ops_per_cpu_s']:,.0f}"]
    if "p50_us" in figures:
        row.append(f"p50 {figures['p50_us']:,.1f} / p99 {figures['p99_us']:,.1f} us")
    else:
        row.append("")
    return row


def format_table(results: Sequence[tuple[Case, Mapping[str, Any]]]) -> str:
    header = ["case", "median", "unit", "target", "verdict", "cpu", "per cpu-s", "latency"]
    rows = [header] + [_row(case, record) for case, record in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    caveats = sorted({case.caveat for case, _ in results if case.caveat and case.target})
    lines.extend(f"* {caveat}" for caveat in caveats)
    if any(record["figures"]["cpu_share"] < BUSY_CPU_SHARE for _, record in results):
        lines.append(f"! cpu = CPU time / wall time of the worst trial; under {BUSY_CPU_SHARE} the "
                     "process waited for a CPU (other load): the median understates the engine, "
                     "'per cpu-s' (ops per CPU second) estimates an idle machine")
    return "\n".join(lines)


# ---------------------------------------------------------------------- the runner


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None, names: Sequence[str],
               description: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, no warm-up, one repeat: checks only that it runs (CI)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"JSONL file to append results to (default {DEFAULT_OUT})")
    parser.add_argument("--case", action="append", choices=sorted(set(names)), dest="cases",
                        metavar="NAME", help="run only this case (repeatable): "
                        + ", ".join(dict.fromkeys(names)))
    parser.add_argument("--repeats", type=_positive, default=None,
                        help="timed trials per case (default 3; 1 with --quick)")
    return parser.parse_args(argv)


def run_cases(cases: Sequence[Case], out_path: Path, settings_for: Callable[[Case], Settings],
              finish: Callable[[Case, dict[str, Any]], None] | None = None,
              after: Callable[[int, Case], None] | None = None,
              ) -> list[tuple[Case, dict[str, Any]]]:
    """Measure each case, print its JSON line and append it to ``out_path``. ``finish`` may add
    to a record before it is written; ``after(index, case)`` runs once a case is done."""
    env = environment()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    results: list[tuple[Case, dict[str, Any]]] = []
    with out_path.open("a", encoding="utf-8") as out:
        for index, case in enumerate(cases):
            print(f"running {case.label} ...", file=sys.stderr, flush=True)
            settings = settings_for(case)
            record = make_record(case, summarize(measure(case, settings)), settings, env)
            if finish is not None:
                finish(case, record)
            line = json.dumps(record, sort_keys=False)
            print(line, flush=True)
            out.write(line + "\n")
            out.flush()
            results.append((case, record))
            if after is not None:
                after(index, case)
    return results


def main(build_cases: Callable[[bool], Sequence[Case]], argv: Sequence[str] | None = None,
         description: str | None = None) -> int:
    """Run the cases ``build_cases(quick)`` returns, honouring --quick / --out / --case /
    --repeats; ``description`` heads ``--help``."""
    names = [case.name for case in build_cases(True)]
    args = parse_args(argv, names, description)
    settings = Settings(quick=args.quick, warmup=0 if args.quick else 1,
                        repeats=args.repeats or (1 if args.quick else 3))
    cases = [c for c in build_cases(args.quick) if not args.cases or c.name in args.cases]
    results = run_cases(cases, args.out, lambda case: settings)
    print("\n" + format_table(results), file=sys.stderr)
    print(f"\n{len(results)} case(s); results appended to {args.out}", file=sys.stderr)
    return 0
