"""`python -m engine.lsp` is `nba lsp`."""

import sys

from engine.lsp import main

sys.exit(main())
