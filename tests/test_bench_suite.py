"""The suite's results table (a pure function of the records) and one real --quick suite run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.suite import (
    END,
    START,
    RunInfo,
    all_modules,
    load_run,
    peer_rows,
    render_markdown,
    replace_results,
)

ROOT = Path(__file__).resolve().parent.parent
RUN = RunInfo(started="2026-11-22 18:00", took_s=600.0)


def record(case: str, ops: float, module: str = "bench_log", *, params: dict[str, Any] | None
           = None, target: float | None = None, p50_us: float | None = None,
           **extra: Any) -> dict[str, Any]:
    figures: dict[str, Any] = {"ops_per_s": ops, "cpu_share": 0.95}
    if p50_us is not None:
        figures.update(p50_us=p50_us, p99_us=p50_us * 4)
    out: dict[str, Any] = {"case": case, "params": params or {}, "unit": "enqueues/s",
                           "figures": figures, "suite_module": module, "python": "3.11.7",
                           "implementation": "CPython", "cpu_count": 2, "commit": "abc1234",
                           "git_dirty": False, "platform": "Linux", **extra}
    if target is not None:
        out.update(target={"workload": "w", "minimum": target}, ratio_to_target=ops / target,
                   target_met=ops >= target)
    return out


def peer(name: str, case: str, ops: float, **params: Any) -> dict[str, Any]:
    return record(case, ops, "bench_peers", params={"peer": name, **params})


def row_of(markdown: str, *needles: str) -> str:
    rows = [line for line in markdown.splitlines()
            if line.startswith("|") and all(n in line for n in needles)]
    assert len(rows) == 1, (needles, rows)
    return rows[0]


def test_a_met_target_shows_met_and_its_ratio() -> None:
    md = render_markdown([record("durable_enqueue", 5_000, params={"producers": 1},
                                 target=4_000, p50_us=180)], RUN)
    row = row_of(md, "| bench_log | `durable_enqueue`")
    assert "≥ 4,000/s" in row and "**met** (1.25x)" in row
    assert "180 µs / 720 µs" in row


def test_a_missed_target_shows_not_met_and_its_ratio() -> None:
    md = render_markdown([record("durable_enqueue", 10_000, params={"producers": 64},
                                 target=40_000)], RUN)
    assert "not met (0.25x)" in row_of(md, "| bench_log | `durable_enqueue`")


def test_a_caveat_marks_the_verdict_and_is_explained_once() -> None:
    records = [record("end_to_end_noop", 5_000, "bench_embedded", target=10_000,
                      params={"store": "memory", "concurrency": c}, caveat="memory: no fsync")
               for c in (1, 16)]
    md = render_markdown(records, RUN)
    assert "not met\\* (0.50x)" in row_of(md, "| bench_embedded |", "concurrency=16")
    assert md.count("\\* memory: no fsync") == 1


def test_a_ceiling_target_names_its_figure() -> None:
    rec = record("memory_per_task", 50_000, params={"store": "log"})
    rec["figures"]["bytes_per_task_beyond_params"] = 900
    rec.update(target={"workload": "memory", "figure": "bytes_per_task_beyond_params",
                       "maximum": 1024, "unit": "bytes"}, ratio_to_target=1.138, target_met=True)
    row = row_of(render_markdown([rec], RUN), "`memory_per_task`")
    assert "≤ 1,024 bytes (bytes_per_task_beyond_params = 900)" in row
    assert "**met** (1.14x)" in row


def test_the_burst_verdict_needs_the_rate_and_the_p99() -> None:
    rec = record("burst", 992, "bench_burst", params={"rate_per_s": 1000, "seconds": 30},
                 target=990, p50_us=250_000)
    rec["target"]["p99_max_ms"] = 50
    rec["target_met"] = False
    rec["figures"].update(max_us=1_500_000, offered_per_s=1000, dropped=0, late=3, drained=1,
                          drain_s=16.0, peak_depth=19_842, sent_to_ack_p99_ms=40.0,
                          cores_server=0.66, cores_host=0.18, cores_generator=0.13,
                          cores_others=0.99)
    rec["burst_verdict"] = {"rate_held": True, "p99_ms": 1000.0, "p99_max_ms": 50}
    md = render_markdown([rec], RUN)
    row = row_of(md, "`burst`", "rate held")
    assert "| 1000/s x 30 s |" in row
    assert "≥ 990/s, p99 ≤ 50 ms" in row
    assert "not met (1.00x); rate held: yes, p99 1,000.0 ms" in row
    details = row_of(md, "19,842")
    assert "16.00 s" in details and "0.66, 0.18, 0.13, 0.99" in details
    assert "| 1.00 s / 1.50 s | 40.0 ms |" in details


def test_ours_against_the_best_peer_gives_the_ratio() -> None:
    records = [record("durable_enqueue", 4_600, params={"producers": 1}),
               peer("bullmq", "enqueue_one_producer", 2_300),
               peer("saq", "enqueue_one_producer", 1_900)]
    (row,) = peer_rows(records)
    assert row[1] == "4,600" and row[3] == "bullmq 2,300" and row[4] == "2.00x"
    assert row[5] == "bullmq 2,300, saq 1,900"
    assert "2.00x" in row_of(render_markdown(records, RUN), "bullmq 2,300", "2.00x")


def test_the_concurrent_peer_is_matched_on_its_concurrency() -> None:
    records = [record("durable_enqueue", 8_000, params={"producers": 64}),
               record("durable_enqueue", 6_000, params={"producers": 16}),
               peer("bullmq", "enqueue_concurrent", 15_800, concurrency=64),
               peer("saq", "enqueue_concurrent", 4_000, concurrency=16)]
    rows = {row[0]: row for row in peer_rows(records)}
    assert rows["`durable_enqueue` producers=64"][3:5] == ["bullmq 15,800", "0.51x"]
    assert rows["`durable_enqueue` producers=16"][3:5] == ["saq 4,000", "1.50x"]


def test_bulk_enqueue_is_matched_on_the_items_per_call() -> None:
    records = [record("enqueue_bulk", 60_000, params={"items_per_call": 1000}),
               record("enqueue_bulk", 40_000, params={"items_per_call": 100}),
               peer("bullmq", "peer_enqueue_bulk", 17_000, batch=1000, fsync="always")]
    rows = {row[0]: row for row in peer_rows(records)}
    assert rows["`enqueue_bulk` items_per_call=1000"][3:5] == ["bullmq 17,000", "3.53x"]
    assert rows["`enqueue_bulk` items_per_call=100"][3] == "no peer figures in this run"


def test_every_bench_module_runs_and_the_peers_come_last() -> None:
    modules = all_modules()
    assert modules[:6] == ("bench_embedded", "bench_log", "bench_http", "bench_cron",
                           "bench_progress", "bench_burst")
    assert modules[-1] == "bench_peers"
    on_disk = {p.stem for p in (ROOT / "benchmarks").glob("bench_*.py")}
    assert on_disk <= set(modules)


def test_only_peers_that_fsync_count_and_a_peer_prefix_is_understood() -> None:
    records = [record("durable_enqueue", 1_000, params={"producers": 1}),
               peer("saq", "peer_enqueue_one_producer", 500, fsync="always"),
               peer("saq", "peer_enqueue_one_producer", 2_000, fsync="everysec"),
               peer("bullmq", "peer_enqueue_bulk", 1_500, fsync="always")]
    (row,) = peer_rows(records)
    assert row[3:] == ["saq 500", "2.00x", "saq 500"]
    md = render_markdown(records, RUN)
    assert "no counterpart of ours in this run: `enqueue_bulk` (bullmq)" in md
    assert "left out here" in md


def test_our_figure_with_a_caveat_is_marked_against_the_peers() -> None:
    records = [record("end_to_end_noop", 10_000, "bench_embedded",
                      params={"store": "memory", "concurrency": 256}, caveat="memory"),
               peer("saq", "peer_end_to_end_noop", 1_000, fsync="always")]
    (row,) = peer_rows(records)
    assert row[1] == "10,000\\*" and row[3:5] == ["saq 1,000", "10.00x"]
    assert "not a like-for-like comparison" in render_markdown(records, RUN)


def test_a_missing_peer_is_said_not_invented() -> None:
    records = [record("end_to_end_noop", 3_000, "bench_embedded", params={"concurrency": 256}),
               peer("bullmq", "enqueue_one_producer", 2_300)]
    (row,) = peer_rows(records)
    assert row[3] == "no peer figures in this run" and row[4] == "-"


def test_peer_records_are_not_listed_as_our_cases() -> None:
    md = render_markdown([peer("bullmq", "enqueue_one_producer", 2_300)], RUN)
    assert "| bench_peers |" not in md
    assert "no case with a peer counterpart in this run" in md


def test_the_header_names_the_run() -> None:
    rec = record("durable_enqueue", 1.0, params={"producers": 1}, git_dirty=True)
    md = render_markdown([rec], RunInfo("2026-11-22 18:00", 90.0, quick=True,
                                        skipped=("bench_peers: not found",)))
    assert "Python 3.11.7" in md and "2 CPUs" in md and "`abc1234` plus uncommitted" in md
    assert "2026-11-22 18:00 UTC" in md and "1.5 min" in md
    assert "--quick run" in md and "skipped: bench_peers: not found" in md


def test_the_table_replaces_only_what_is_between_the_markers() -> None:
    readme = f"# B\n\n## Results\n\n{START}\nold\n{END}\n\nkept\n"
    assert replace_results(readme, "new\n") == f"# B\n\n## Results\n\n{START}\nnew\n{END}\n\nkept\n"


def test_markers_quoted_in_prose_are_not_markers() -> None:
    readme = (f"# B\n\nbetween the `{START}` and `{END}` markers\n\n## Results\n\n{START}\n"
              f"old\n{END}\n")
    assert replace_results(readme, "new") == readme.replace("old", "new")


def test_the_markers_open_an_existing_results_section() -> None:
    readme = "# B\n\n## Results\n\nearlier run\n\n## Next\n"
    assert replace_results(readme, "t") == (f"# B\n\n## Results\n\n{START}\nt\n{END}\n\n"
                                            "earlier run\n\n## Next\n")


def test_a_missing_results_section_is_added_at_the_end() -> None:
    expected = f"# B\n\ntext\n\n## Results\n\n{START}\nt\n{END}\n"
    assert replace_results("# B\n\ntext\n", "t") == expected


def test_an_earlier_run_loads_with_what_the_suite_noted(tmp_path: Path) -> None:
    run = tmp_path / "suite-x.jsonl"
    run.write_text(json.dumps(record("durable_enqueue", 1.0)) + "\n")
    (tmp_path / "suite-x.run.json").write_text(json.dumps(
        {"started": "2026-11-22 18:24", "took_s": 60.0, "quick": False, "skipped": ["a: b"],
         "failed": [], "command": "c", "modules": ["bench_log"]}))
    records, info = load_run(run)
    assert [r["case"] for r in records] == ["durable_enqueue"]
    assert info == RunInfo("2026-11-22 18:24", 60.0, False, ("a: b",), (), "c", ("bench_log",))


@pytest.mark.timeout(120)
def test_a_quick_suite_run_writes_its_files_and_leaves_the_readme(tmp_path: Path) -> None:
    readme = ROOT / "benchmarks" / "README.md"
    before = readme.read_text(encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.suite", "--quick", "--only", "bench_embedded",
         "--out-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    assert proc.returncode == 0, proc.stderr
    tables = sorted(tmp_path.glob("suite-*.md"))
    assert len(tables) == 1
    table = tables[0].read_text(encoding="utf-8")
    assert "`end_to_end_noop`" in table and "--quick run" in table
    assert (tmp_path / "latest.md").read_text(encoding="utf-8") == table
    lines = (tmp_path / "latest.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines and all(json.loads(line)["suite_module"] == "bench_embedded" for line in lines)
    assert not list(tmp_path.glob("*.raw.jsonl"))
    assert json.loads((tmp_path / "latest.run.json").read_text())["quick"] is True
    assert readme.read_text(encoding="utf-8") == before
