"""``python -m engine.server RULES [options]``: the same as `nba serve`."""

import sys

from engine.server.cli import main

sys.exit(main())
