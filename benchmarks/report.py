"""Formatting results: numbers, markdown tables, the machine, and benchmarks/RESULTS.md."""

from __future__ import annotations

import datetime
import math
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Iterable, Sequence

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
REPORTED_PACKAGES = (
    "nba",
    "Cython",
    "lark",
    "redis",
    "hiredis",
    "msgpack",
    "uvloop",
    "rule-engine",
    "zen-engine",
    "cel-python",
    "durable-rules",
    "business-rules",
)


def figure(value: float | None, digits: int = 3) -> str:
    """A number with about ``digits`` significant digits, no exponent for everyday sizes."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return "0"
    if math.isinf(value):
        return "inf"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def ratio(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{figure(value, 2)}x"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def _run(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict:
    model = ""
    for line in _run(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    return {
        "uname": _run(["uname", "-a"]) or platform.platform(),
        "cpu": model or platform.processor() or "unknown",
        "nproc": _run(["nproc"]) or "unknown",
        "python": sys.version.split()[0] + f" ({platform.python_implementation()})",
    }


def commit() -> str:
    """The work tree's commit, with "+ changes" when it has uncommitted changes."""
    root = str(RESULTS_PATH.parent.parent)
    head = _run(["git", "-C", root, "rev-parse", "--short", "HEAD"]) or "unknown"
    dirty = _run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"])
    return f"{head} + changes" if dirty else head


def versions() -> dict[str, str]:
    out = {}
    for name in REPORTED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def results_markdown(sections: list[dict], argv: Sequence[str]) -> str:
    info = machine()
    lines = [
        "# Benchmark results",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with:",
        "",
        "```",
        "nba bench " + " ".join(shlex.quote(a) for a in argv),
        "```",
        "",
        "The machine is shared and noisy: compare the ratios measured within one run, not",
        "absolute figures across runs. Latencies are per call, timed with",
        "`time.perf_counter_ns`; decisions per second come from an untimed loop.",
        "",
        "## Machine",
        "",
        f"- `{info['uname']}`",
        f"- CPU: {info['cpu']}, {info['nproc']} processors online",
        f"- Python {info['python']}",
        f"- nba at commit {commit()}",
        "",
        "## Versions",
        "",
        markdown_table(["package", "version"], sorted(versions().items(), key=lambda kv: kv[0].lower())),
        "",
    ]
    for section in sections:
        lines += [f"## {section['title']}", "", section["markdown"].rstrip(), ""]
    return "\n".join(lines)


def write_results(sections: list[dict], argv: Sequence[str], path: Path = RESULTS_PATH) -> Path:
    path.write_text(results_markdown(sections, argv), encoding="utf-8")
    return path
