"""Benchmarks measure each twin in a process of its own (the twin is picked at import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_in_twin(module_args: list[str], pure: bool, timeout_s: float) -> dict:
    """Run ``python -m MODULE ARGS`` on the pure-Python (``pure``) or the Cython twin and
    return the JSON object on the last line of its output that starts with ``{``, or
    ``{"error": ...}`` when it failed or timed out."""
    env = {k: v for k, v in os.environ.items() if k != "NBA_PURE_PYTHON"}
    if pure:
        env["NBA_PURE_PYTHON"] = "1"
    command = [sys.executable, "-m", *module_args]
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-500:]}"}
    return json.loads(lines[-1])
