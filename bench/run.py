"""Run every benchmark against a local PostgreSQL and print one results table in Markdown.

Each benchmark runs in a process of its own (so imports and memory of one do not change another)
as ``python bench/<name>.py [--quick] --json PATH``. The analytics benchmarks
(``bench/analytics_*.py`` and ``bench/rollup*.py``) run the same way when they exist, and must
write their rows in the same JSON form (a list of ``bench.common.Row`` fields). The table and the
raw rows are also written to ``bench/results/`` (not committed).

    python bench/run.py            # the full suite: about 10 minutes on 2 cores
    python bench/run.py --quick    # a smoke test of every benchmark: numbers mean nothing
    python bench/run.py --only checkpoint_cost long_conversations
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, progress, server_url

BENCH_DIR = ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
OWN_BENCHMARKS = ("checkpoint_cost", "long_conversations", "concurrency", "cold_start")
ANALYTICS_PATTERNS = ("analytics_*.py", "rollup*.py")


def benchmark_names() -> list[str]:
    """List the benchmarks in running order: this suite's, then the analytics ones found on disk."""
    found = {p.stem for pattern in ANALYTICS_PATTERNS for p in BENCH_DIR.glob(pattern)}
    return [*OWN_BENCHMARKS, *sorted(found)]


def describe_machine() -> str:
    """Return one line naming the date, CPU cores, memory, CPU model, Python and PostgreSQL versions."""
    memory = "unknown memory"
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 2**20:.0f} GiB memory"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    postgres = "PostgreSQL unknown"
    try:
        import psycopg

        with psycopg.connect(server_url()) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            postgres = f"PostgreSQL {row[0]}" if row else postgres
    except Exception as err:
        postgres = f"PostgreSQL version not read ({type(err).__name__})"
    return (
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores ({cpu}), {memory}, "
        f"Python {platform.python_version()}, {postgres}"
    )


def run_one(name: str, quick: bool) -> list[dict[str, Any]]:
    """Run one benchmark in a new process and return its rows; a failure becomes one row saying so."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / f"{name}.json"
        command = [sys.executable, str(BENCH_DIR / f"{name}.py"), "--json", str(output)]
        if quick:
            command.append("--quick")
        started = time.monotonic()
        # stderr is left attached, so the benchmark's progress lines show as it runs.
        completed = subprocess.run(command, cwd=ROOT, check=False)
        elapsed = time.monotonic() - started
        if completed.returncode != 0 or not output.exists():
            progress("%s failed with exit code %d after %.0f s", name, completed.returncode, elapsed)
            return [{"benchmark": name, "case": "failed", "unit": "", "note": f"exit code {completed.returncode}"}]
        progress("%s finished in %.0f s", name, elapsed)
        rows: list[dict[str, Any]] = json.loads(output.read_text(encoding="utf-8"))
        return rows


def _number(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Return the rows as a Markdown table."""
    lines = [
        "| Benchmark | Case | Median | Min | Max | Unit | Runs | Ratio to baseline | Target | Met | Note |",
        "|---|---|---:|---:|---:|---|---:|---:|---|---|---|",
    ]
    for row in rows:
        met = {True: "yes", False: "**no**", None: ""}[row.get("met")]
        ratio = row.get("ratio")
        ratio_text = f"{_number(ratio)}x ({row.get('baseline')})" if ratio is not None else ""
        cells = [
            row.get("benchmark", ""),
            row.get("case", ""),
            _number(row.get("median")),
            _number(row.get("minimum")),
            _number(row.get("maximum")),
            row.get("unit", ""),
            _number(row.get("runs")),
            ratio_text,
            row.get("target", ""),
            met,
            row.get("note", ""),
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="run every benchmark briefly (a smoke test)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks (file names in bench/)")
    options = parser.parse_args()

    names = benchmark_names()
    if options.only:
        unknown = sorted(set(options.only) - set(names))
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(names)}")
        names = [n for n in names if n in options.only]
    missing = [p for p in ANALYTICS_PATTERNS if not any(BENCH_DIR.glob(p))]
    for pattern in missing:
        progress("no bench/%s yet: the analytics benchmark it holds is not in this run", pattern)

    machine = describe_machine()
    rows: list[dict[str, Any]] = []
    for name in names:
        progress("running %s%s", name, " (quick)" if options.quick else "")
        rows.extend(run_one(name, options.quick))

    table = format_table(rows)
    heading = f"Results of bench/run.py{' --quick' if options.quick else ''}: {machine}"
    print(f"{heading}\n\n{table}")
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS_DIR / f"{stamp}.md").write_text(f"{heading}\n\n{table}\n", encoding="utf-8")
    (RESULTS_DIR / f"{stamp}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    failed = [r for r in rows if r.get("case") == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
