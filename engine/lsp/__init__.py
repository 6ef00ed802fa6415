"""The language server for `.rules` files (`nba lsp`): diagnostics, hover, go to
definition, completion and document symbols, over stdio (see docs/editors.md)."""


def main() -> int:
    from nba.engine.lsp.server import main as serve

    return serve()
