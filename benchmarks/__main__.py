"""`python -m benchmarks ...` is `nba bench ...`."""

import sys

from benchmarks.cli import main

sys.exit(main())
