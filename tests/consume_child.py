"""`nba consume` in a child process of tests/test_consume.py, with a test-only fault.

``python tests/consume_child.py DIE_ON ARGS...``: runs ``nba consume ARGS...``; a consumer
given a customer id as DIE_ON ("-": none) kills itself (SIGKILL, as a crash would) when it
is about to decide an event of that customer: a poison entry.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> int:
    die_on, argv = sys.argv[1], sys.argv[2:]
    if die_on != "-":
        import nba.engine.stream.batch as batch

        real_evaluate = batch.evaluate

        def evaluate(ruleset, event, state, limit, explain):
            if event["customer_id"] == die_on:
                os.kill(os.getpid(), signal.SIGKILL)
            return real_evaluate(ruleset, event, state, limit, explain)

        batch.evaluate = evaluate
    from nba.engine.cli import main as nba_main

    return nba_main(["consume", *argv])


if __name__ == "__main__":
    sys.exit(main())
