"""``python -m nba.engine.server RULES [options]``: the same as `nba serve`."""

import sys

from nba.engine.server.cli import main

sys.exit(main())
