"""How long a ruleset load stalls an event loop, and what it costs: time, phases, peak memory.

Each measurement runs in a fresh Python process (so that its peak RSS is its own): an
asyncio loop runs a ticker that sleeps 1 ms and records how late it wakes (the loop's
lag: while anything holds the loop's thread, or the GIL, the ticker cannot run), while
the ruleset is loaded one of three ways:

- ``in_loop``: ``load_ruleset`` called in the loop (what a naive reload does);
- ``thread``: ``load_ruleset`` in a worker thread (``asyncio.to_thread``): the loop runs
  only when the GIL is released, which ``compile()`` and other long C calls do not do;
- ``subprocess``: ``load_ruleset_async``: a child process loads, the parent links;
- ``idle``: no load, 3 s: the machine's own noise floor for the lag.

    python -m benchmarks.load_stall /tmp/big.rules [--modes in_loop,thread,subprocess]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time

MODES = ("idle", "in_loop", "thread", "subprocess")
TICK_S = 0.001


async def _measure(path: str, mode: str) -> dict:
    from nba.dsl import isolated
    from nba.dsl.loader import load_ruleset, load_ruleset_async

    lags: list[float] = []
    when: list[float] = []  # the time each lag ended
    stop = False
    link_started: list[float] = []
    link_steps = isolated._link_steps

    def timed_link_steps(answer):  # when the parent's share (unpickle, define, link) starts
        link_started.append(time.perf_counter())
        return (yield from link_steps(answer))

    isolated._link_steps = timed_link_steps

    async def ticker() -> None:
        while not stop:
            before = time.perf_counter()
            await asyncio.sleep(TICK_S)
            now = time.perf_counter()
            lags.append(now - before - TICK_S)
            when.append(now)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    lags.clear()
    when.clear()
    started = time.perf_counter()
    ruleset = None
    if mode == "idle":
        await asyncio.sleep(3)
    elif mode == "in_loop":
        ruleset = load_ruleset(path)
    elif mode == "thread":
        ruleset = await asyncio.to_thread(load_ruleset, path)
    else:
        ruleset = await load_ruleset_async(path)
    elapsed = time.perf_counter() - started
    stop = True
    await task
    linking = [lag for lag, end in zip(lags, when) if link_started and end >= link_started[0]]
    lags.sort()
    return {
        "max_lag_while_linking_s": max(linking) if linking else None,
        "mode": mode,
        "rules": len(ruleset.rules) if ruleset is not None else 0,
        "load_s": elapsed,
        "max_lag_s": lags[-1] if lags else elapsed,
        "p99_lag_s": lags[int(len(lags) * 0.99)] if lags else elapsed,
        "ticks": len(lags),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure_in_child(path: str, mode: str) -> dict:
    """One measurement in a fresh process (the same interpreter and twin)."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.load_stall", path, "--one", mode],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def phases_in_child(path: str) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; from nba.dsl.isolated import measure; print(json.dumps(measure(sys.argv[1])))",
            path,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(asyncio.run(_measure(args.path, args.one))))
        return 0
    print(json.dumps({"phases": phases_in_child(args.path)}))
    for mode in args.modes.split(","):
        print(json.dumps(measure_in_child(args.path, mode)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
