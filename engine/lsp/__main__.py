"""`python -m nba.engine.lsp` is `nba lsp`."""

import sys

from nba.engine.lsp import main

sys.exit(main())
