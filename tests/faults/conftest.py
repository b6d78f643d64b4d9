"""The fault suite restarts the machine's PostgreSQL: it runs only when asked for (``-m faults``).

``make test`` runs it alone after the parallel suite; a plain ``pytest tests`` skips it, so it
never pulls the server from under tests running beside it.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    selected = config.getoption("markexpr", "") or ""
    if "faults" in selected and "not faults" not in selected:
        return
    skip = pytest.mark.skip(reason="fault suite: run with `make faults` (pytest -m faults tests/faults)")
    for item in items:
        if item.get_closest_marker("faults") is not None:
            item.add_marker(skip)
