"""Shared test setup: which twin of the hot path this run uses."""

from __future__ import annotations

import pytest

# Fixtures for every test module: throwaway Redis servers and clusters
# (tests/redis_fixtures.py) and certificates made by openssl (tests/certificates.py)
pytest_plugins = ("redis_fixtures", "certificates")


def pytest_report_header(config):
    import nba.dsl.twins

    return f"nba hot path: {nba.dsl.twins.IMPLEMENTATION} twins"


@pytest.fixture
def write_rules(tmp_path):
    """Write rule text to a file in a temp dir and return its path."""

    def write(text: str, name: str = "rules.rules"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return write
