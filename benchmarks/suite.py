"""The whole benchmark suite in one command, and its results table.

Run from the repository root::

    python -m benchmarks.suite                     # every module, full sizes; rewrites README
    python -m benchmarks.suite --quick             # every module tiny: checks they all run
    python -m benchmarks.suite --only bench_http --only bench_burst
    python -m benchmarks.suite --quick --write-readme --out-dir /tmp/suite
    python -m benchmarks.suite --render benchmarks/results/latest.jsonl   # the table again

Every ``benchmarks/bench_*.py`` (in the order of ``MODULES``, others before ``bench_peers``) runs
in its own subprocess (``python -m benchmarks.<module> [--quick] --out RUN``), one after the
other, so no module's heap, threads or servers disturb the next. Every JSON line of the run
lands in ``<out-dir>/suite-<timestamp>.jsonl`` (each tagged with ``suite_module``), copied to
``<out-dir>/latest.jsonl`` (with ``.run.json`` beside each: date, duration, skips); the Markdown
table (:func:`render_markdown`, a pure function of the records) goes to
``<out-dir>/suite-<timestamp>.md`` and ``latest.md`` and, after a full run of every module (or
with ``--write-readme``), into ``benchmarks/README.md`` between ``<!-- results:start -->`` and
``<!-- results:end -->``. ``bench_peers`` runs when its file
exists and is skipped with a line saying so otherwise. A module that fails or times out is
reported and the suite goes on; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._harness import BUSY_CPU_SHARE, REPO_ROOT

# The order modules run in; any other benchmarks/bench_*.py found runs before bench_peers.
# what a full run adds to a module's command line: the issue's own sizes (bench_log: replay of
# 1,000,000 records, 1,000,000 held tasks for memory, 20,000 one-producer enqueues)
FULL_RUN_ARGS: dict[str, list[str]] = {"bench_log": ["--full-size"]}
MODULES = ("bench_embedded", "bench_log", "bench_http", "bench_cron", "bench_progress",
           "bench_burst", "bench_peers")
OPTIONAL = ("bench_peers",)  # being written elsewhere: run when present, else a line says so
DEFAULT_OUT_DIR = REPO_ROOT / "benchmarks" / "results"
README = REPO_ROOT / "benchmarks" / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
TIMEOUT_S = {False: 45 * 60, True: 10 * 60}  # per module: full, quick

# Our case -> the peer case it is compared with: (module, case, our params to match), the peer's
# case name (bench_peers may prefix it with "peer_"), and the parameter whose value a peer must
# share when it states one (its spellings in _PEER_KEYS).
PEER_COUNTERPARTS: tuple[tuple[str, str, Mapping[str, Any], str, str | None], ...] = (
    ("bench_log", "durable_enqueue", {"producers": 1}, "enqueue_one_producer", None),
    ("bench_log", "durable_enqueue", {"producers": 16}, "enqueue_concurrent", "producers"),
    ("bench_log", "durable_enqueue", {"producers": 64}, "enqueue_concurrent", "producers"),
    ("bench_log", "enqueue_bulk", {}, "enqueue_bulk", "items_per_call"),
    ("bench_embedded", "end_to_end_noop", {}, "end_to_end", None),
)
_PEER_KEYS = {"producers": ("producers", "concurrency", "in_flight", "clients"),
              "items_per_call": ("items_per_call", "batch", "batch_size")}
# Peers count only when they acknowledge after an fsync, as the targets assume.
DURABLE_PEER_FSYNC = (None, "always")
_VARIANT_KEYS = ("server", "store", "fsync", "producers", "concurrency", "items_per_call", "phase",
                 "client", "metrics")


# ---------------------------------------------------------------------- rendering (pure)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What the records do not say about the run."""

    started: str  # "YYYY-MM-DD HH:MM", UTC
    took_s: float = 0.0
    quick: bool = False
    skipped: tuple[str, ...] = ()  # "module: why"
    failed: tuple[str, ...] = ()
    command: str = "python -m benchmarks.suite"
    modules: tuple[str, ...] = field(default_factory=tuple)


def _is_peer(record: Mapping[str, Any]) -> bool:
    return bool(record.get("params", {}).get("peer"))


def _n(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


def _duration(us: float) -> str:
    if us < 1_000:
        return f"{us:,.0f} µs"
    return f"{us / 1000:,.1f} ms" if us < 1_000_000 else f"{us / 1e6:,.2f} s"


def variant(record: Mapping[str, Any]) -> str:
    if record.get("variant"):
        return str(record["variant"])
    params = record.get("params", {})
    if "rate_per_s" in params and "seconds" in params:  # a burst
        return f"{params['rate_per_s']}/s x {params['seconds']:g} s"
    return ", ".join(f"{k}={params[k]}" for k in _VARIANT_KEYS if k in params)


def _verdict(record: Mapping[str, Any]) -> tuple[str, str]:
    """(target, verdict) cells."""
    target = record.get("target")
    if not target:
        return "-", "-"
    if "maximum" in target:
        limit = f"≤ {_n(target['maximum'])} {target.get('unit', '')}".rstrip()
        shown = record["figures"].get(target.get("figure", ""), None)
        limit += f" ({target.get('figure')} = {_n(shown)})" if shown is not None else ""
    else:
        limit = f"≥ {_n(target['minimum'])}/s"
    if "p99_max_ms" in target:
        limit += f", p99 ≤ {target['p99_max_ms']:g} ms"
    met = "**met**" if record.get("target_met") else "not met"
    mark = "\\*" if record.get("caveat") else ""
    verdict = f"{met}{mark} ({record.get('ratio_to_target', 0):.2f}x)"
    burst = record.get("burst_verdict")
    if burst and "p99_max_ms" in target:
        verdict += (f"; rate held: {'yes' if burst['rate_held'] else 'no'}, p99 "
                    f"{burst['p99_ms']:,.1f} ms")
    return limit, verdict


def _case_row(record: Mapping[str, Any]) -> list[str]:
    figures = record["figures"]
    latency = "-"
    if "p50_us" in figures:
        latency = f"{_duration(figures['p50_us'])} / {_duration(figures['p99_us'])}"
    cpu = figures.get("cpu_share")
    cpu_cell = "-" if cpu is None else f"{cpu:.2f}{'!' if cpu < BUSY_CPU_SHARE else ''}"
    target, verdict = _verdict(record)
    return [str(record.get("suite_module", "")), f"`{record['case']}`", variant(record),
            f"{_n(figures['ops_per_s'])} {record.get('unit', '')}", latency, cpu_cell, target,
            verdict]


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str) -> list[str]:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def _matches(record: Mapping[str, Any], module: str, case: str,
             params: Mapping[str, Any]) -> bool:
    if record.get("case") != case or _is_peer(record):
        return False
    if record.get("suite_module") not in (None, module):
        return False
    return all(record.get("params", {}).get(k) == v for k, v in params.items())


def _same_size(peer: Mapping[str, Any], ours: Mapping[str, Any], key: str | None) -> bool:
    """Whether ``peer`` ran at our record's ``key`` (a peer that does not say is taken)."""
    if key is None:
        return True
    params = peer.get("params", {})
    theirs = next((params[k] for k in _PEER_KEYS[key] if k in params), None)
    return theirs is None or theirs == ours.get("params", {}).get(key)


def _peer_case(record: Mapping[str, Any]) -> str:
    name = str(record.get("case", "")).removeprefix("peer_")
    return "end_to_end" if name == "end_to_end_noop" else name


def _durable_peers(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in records if _is_peer(r) and r["params"].get("fsync") in DURABLE_PEER_FSYNC]


def peer_rows(records: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """One row per our case with a peer counterpart: ours, the best durable peer, ours / best."""
    peers = _durable_peers(records)
    rows = []
    for module, case, params, peer_case, key in PEER_COUNTERPARTS:
        for ours in (r for r in records if _matches(r, module, case, params)):
            candidates = sorted((p for p in peers if _peer_case(p) == peer_case
                                 and _same_size(p, ours, key)),
                                key=lambda p: -p["figures"]["ops_per_s"])
            mine = ours["figures"]["ops_per_s"]
            mark = "\\*" if ours.get("caveat") else ""
            row = [f"`{case}` {variant(ours)}", _n(mine) + mark, f"`{peer_case}`"]
            if not candidates:
                rows.append([*row, "no peer figures in this run", "-", "-"])
                continue
            best = candidates[0]["figures"]["ops_per_s"]
            shown = [f"{p['params']['peer']} {_n(p['figures']['ops_per_s'])}" for p in candidates]
            rows.append([*row, shown[0], f"{mine / best:.2f}x", ", ".join(shown)])
    return rows


def _unmatched_peer_cases(records: Sequence[Mapping[str, Any]]) -> list[str]:
    ours = {peer_case for module, case, params, peer_case, _ in PEER_COUNTERPARTS
            if any(_matches(r, module, case, params) for r in records)}
    left: dict[str, set[str]] = {}
    for p in _durable_peers(records):
        if _peer_case(p) not in ours:
            left.setdefault(_peer_case(p), set()).add(str(p["params"]["peer"]))
    return [f"`{case}` ({', '.join(sorted(names))})" for case, names in sorted(left.items())]


def _header(records: Sequence[Mapping[str, Any]], run: RunInfo) -> list[str]:
    first = records[0] if records else {}
    dirty = " plus uncommitted changes" if first.get("git_dirty") else ""
    lines = [f"- date: {run.started} UTC; the run took {run.took_s / 60:.1f} min "
             f"(`{run.command}`)",
             f"- Python {first.get('python', '?')} ({first.get('implementation', '?')}), "
             f"{first.get('cpu_count', '?')} CPUs, {first.get('platform', '?')}",
             f"- commit `{first.get('commit', 'unknown')}`{dirty}"]
    if run.quick:
        lines.append("- **--quick run: tiny sizes, figures mean nothing** (it checks that "
                     "everything runs)")
    lines += [f"- skipped: {s}" for s in run.skipped]
    lines += [f"- **failed**: {s}" for s in run.failed]
    return lines


def render_markdown(records: Sequence[Mapping[str, Any]], run: RunInfo) -> str:
    """The results section: run details, every case, then ours against the best peer."""
    ours = [r for r in records if not _is_peer(r)]
    lines = _header(records, run) + [""]
    lines += _table(["module", "case", "variant", "median", "p50 / p99", "cpu", "target",
                     "verdict"], (_case_row(r) for r in ours), "lllrlrll")
    caveats = sorted({str(r["caveat"]) for r in ours if r.get("target") and r.get("caveat")})
    lines += [""] + [f"\\* {c}" for c in caveats]
    lines.append(f"cpu: the measuring process's CPU time / wall time (worst trial). For a "
                 f"CPU-bound case under {BUSY_CPU_SHARE} (`!`) means other load took the CPU; "
                 "bench_http and bench_burst measure their load generator, bench_cron, "
                 "bench_progress and bench_burst mostly wait by design.")
    burst = [r for r in ours if r.get("burst_verdict")]
    if burst:
        lines += ["", "Burst details (ack latency from the scheduled send; server answer = sent "
                  "to ack; cores used on average, from /proc; `others` = the rest of the "
                  "machine's load):", ""]
        lines += _table(["case", "acked / offered", "dropped", "late", "ack p99 / max",
                         "server answer p99", "drain", "peak depth",
                         "cores: server, host, generator, others"],
                        (_burst_row(r) for r in burst), "llrrllrrl")
    peers = peer_rows(records)
    lines += ["", "Against the peers (the best peer acknowledging after an fsync, same run, same "
              "machine; ops/s):", ""]
    if peers:
        lines += _table(["our case", "ours", "peer case", "best peer", "ours / best",
                         "durable peers"], peers, "lrllrl")
    else:
        lines.append("no case with a peer counterpart in this run")
    if any(row[1].endswith("\\*") for row in peers):
        lines += ["", "\\* our figure carries a caveat above (e.g. the memory store, no fsync): "
                  "a ceiling, not a like-for-like comparison."]
    unmatched = _unmatched_peer_cases(records)
    if unmatched:
        lines += ["", f"Peer cases with no counterpart of ours in this run: "
                  f"{', '.join(unmatched)}."]
    if any(_is_peer(r) and r["params"].get("fsync") not in DURABLE_PEER_FSYNC for r in records):
        lines += ["", "Peer rows with another fsync policy (e.g. `everysec`) are in the JSON lines "
                  "but left out here: they acknowledge before the fsync."]
    return "\n".join(lines).rstrip() + "\n"


def _burst_row(record: Mapping[str, Any]) -> list[str]:
    f = record["figures"]
    cores = ", ".join(f"{f.get('cores_' + k, float('nan')):.2f}"
                      for k in ("server", "host", "generator", "others"))
    drain = f"{f['drain_s']:.2f} s" if f.get("drained") else "not drained"
    return [f"`{record['case']}` {variant(record)}",
            f"{_n(f['ops_per_s'])} / {_n(f['offered_per_s'])} per s",
            f"{f['dropped']:,.0f}", f"{f['late']:,.0f}",
            f"{_duration(f['p99_us'])} / {_duration(f['max_us'])}",
            _duration(f.get("sent_to_ack_p99_ms", -1) * 1000), drain,
            f"{f['peak_depth']:,.0f}", cores]


def replace_results(readme: str, table: str) -> str:
    """``readme`` with ``table`` between the markers, each alone on its line (a marker quoted in
    prose is not one); the first time, the markers are added at the top of the "## Results"
    section, which is created at the end when missing."""
    block = f"{START}\n{table.rstrip()}\n{END}\n"
    lines = readme.splitlines(keepends=True)
    bare = [line.strip() for line in lines]
    if START in bare and END in bare[bare.index(START):]:
        first = bare.index(START)
        last = bare.index(END, first)
        return "".join(lines[:first]) + block + "".join(lines[last + 1:])
    if "## Results" in bare:
        at = bare.index("## Results") + 1
        return "".join(lines[:at]) + "\n" + block + "".join(lines[at:])
    return readme.rstrip() + "\n\n## Results\n\n" + block


# ---------------------------------------------------------------------- running


def _available(module: str) -> bool:
    return importlib.util.find_spec(f"benchmarks.{module}") is not None


def all_modules() -> tuple[str, ...]:
    """MODULES in their order, with any other ``benchmarks/bench_*.py`` before the optional
    ones."""
    found = sorted(p.stem for p in (REPO_ROOT / "benchmarks").glob("bench_*.py"))
    first = [m for m in MODULES if m not in OPTIONAL]
    return (*first, *(m for m in found if m not in MODULES), *OPTIONAL)


def _run_module(module: str, quick: bool, out: Path) -> tuple[list[dict[str, Any]], str | None]:
    """Run one module; its new records (tagged) and why it failed, if it did."""
    before = len(out.read_text(encoding="utf-8").splitlines()) if out.exists() else 0
    argv = [sys.executable, "-m", f"benchmarks.{module}",
            *(["--quick"] if quick else FULL_RUN_ARGS.get(module, [])), "--out", str(out)]
    print(f"\n=== {module} ({' '.join(argv[1:])})", file=sys.stderr, flush=True)
    started = time.monotonic()
    problem = None
    try:
        proc = subprocess.run(argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                              timeout=TIMEOUT_S[quick], check=False)
        if proc.returncode != 0:
            problem = f"{module} exited {proc.returncode}"
    except subprocess.TimeoutExpired:
        problem = f"{module} did not finish within {TIMEOUT_S[quick] // 60} min"
    lines = out.read_text(encoding="utf-8").splitlines()[before:] if out.exists() else []
    records = [{**json.loads(line), "suite_module": module} for line in lines if line.strip()]
    print(f"=== {module}: {len(records)} record(s) in {time.monotonic() - started:.0f} s"
          + (f"; {problem}" if problem else ""), file=sys.stderr, flush=True)
    return records, problem


def run_suite(modules: Sequence[str], quick: bool, out_dir: Path) -> tuple[list[dict[str, Any]],
                                                                          RunInfo, str]:
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"suite-{stamp}.raw.jsonl"  # what the modules append to
    records: list[dict[str, Any]] = []
    skipped, failed = [], []
    clock = time.monotonic()
    for module in modules:
        if not _available(module):
            line = f"{module}: benchmarks/{module}.py not found, skipped"
            print(f"\n=== {line}", file=sys.stderr, flush=True)
            skipped.append(line)
            continue
        new, problem = _run_module(module, quick, raw)
        records += new
        if problem:
            failed.append(problem)
    raw.unlink(missing_ok=True)
    run_file = out_dir / f"suite-{stamp}.jsonl"
    run_file.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    shutil.copyfile(run_file, out_dir / "latest.jsonl")
    argv = ["python -m benchmarks.suite", *(["--quick"] if quick else [])]
    if tuple(modules) != all_modules():
        argv += [f"--only {m}" for m in modules]
    info = RunInfo(started.strftime("%Y-%m-%d %H:%M"), round(time.monotonic() - clock, 1), quick,
                   tuple(skipped), tuple(failed), " ".join(argv), tuple(modules))
    for name in (f"suite-{stamp}.run.json", "latest.run.json"):
        (out_dir / name).write_text(json.dumps(asdict(info)) + "\n", encoding="utf-8")
    return records, info, stamp


def load_run(path: Path) -> tuple[list[dict[str, Any]], RunInfo]:
    """A run's records and what the suite noted about it (``<name>.run.json`` beside
    ``<name>.jsonl``; without it, the date of the first record)."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
               if line.strip()]
    meta = path.with_name(path.name.removesuffix(".jsonl") + ".run.json")
    if meta.exists():
        fields: dict[str, Any] = json.loads(meta.read_text(encoding="utf-8"))
        for key in ("skipped", "failed", "modules"):
            fields[key] = tuple(fields.get(key, ()))
        return records, RunInfo(**fields)
    first = str(records[0].get("timestamp", "?")) if records else "?"
    return records, RunInfo(first[:16].replace("T", " "), quick=any(r.get("quick")
                                                                     for r in records))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="every module with --quick")
    parser.add_argument("--only", action="append", choices=all_modules(), metavar="MODULE",
                        help="run only this module (repeatable): " + ", ".join(all_modules()))
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR,
                        help=f"where the run's files go (default {DEFAULT_OUT_DIR})")
    parser.add_argument("--write-readme", action="store_true",
                        help="put the table into benchmarks/README.md even after --quick, "
                        "--only or --render")
    parser.add_argument("--no-readme", action="store_true",
                        help="leave benchmarks/README.md alone even after a full run of every "
                        "module")
    parser.add_argument("--render", type=Path, metavar="JSONL",
                        help="run nothing: print the table of an earlier run's file (e.g. "
                        "benchmarks/results/latest.jsonl)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.render is not None:
        records, info = load_run(args.render)
        table = render_markdown(records, info)
        print(table)
        full = False
    else:
        modules = [m for m in all_modules() if not args.only or m in args.only]
        records, info, stamp = run_suite(modules, args.quick, args.out_dir)
        table = render_markdown(records, info)
        for name in (f"suite-{stamp}.md", "latest.md"):
            (args.out_dir / name).write_text(table, encoding="utf-8")
        print("\n" + table)
        print(f"{len(records)} record(s) in {args.out_dir / f'suite-{stamp}.jsonl'} (and "
              f"latest.jsonl); table in suite-{stamp}.md (and latest.md)", file=sys.stderr)
        full = not (args.quick or args.only)
    if args.write_readme or (full and not args.no_readme):
        README.write_text(replace_results(README.read_text(encoding="utf-8"), table),
                          encoding="utf-8")
        print(f"table written into {README.relative_to(REPO_ROOT)}", file=sys.stderr)
    return 1 if info.failed else 0


if __name__ == "__main__":
    sys.exit(main())
