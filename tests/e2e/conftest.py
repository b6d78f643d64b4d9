"""The end-to-end suite: one deployment and one Prometheus per session.

It runs on its own (``make e2e``, part of ``make test``): a plain ``pytest
tests`` deselects it, since it starts a stack and a Prometheus of its own.
See ``harness.py`` for the environment that points it at another deployment.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import harness
from tests.e2e.harness import Deployment, PrometheusAPI
from tests.e2e.scenarios import Gateway, all_scenarios

E2E_DIR = Path(__file__).resolve().parent
TARGET_KEY = pytest.StashKey[str]()


def _asked_for(config: pytest.Config) -> bool:
    for arg in config.args:
        path = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if path == E2E_DIR or E2E_DIR in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _asked_for(config):
        return
    e2e = [item for item in items if E2E_DIR in Path(str(item.path)).parents]
    if e2e:
        config.hook.pytest_deselected(items=e2e)
        items[:] = [item for item in items if item not in e2e]


def pytest_report_header(config: pytest.Config) -> str | None:
    if not _asked_for(config):
        return None
    try:
        target = harness.from_environment()
    except harness.Unconfigured as error:
        return f"e2e: {error}"
    return f"e2e: {target.description}" if target else "e2e: the local stack (QUN_E2E_GATEWAY not set)"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    if TARGET_KEY in config.stash:
        terminalreporter.write_line(f"e2e ran against: {config.stash[TARGET_KEY]}")


@pytest.fixture(scope="session")
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    try:
        configured = harness.from_environment()
    except harness.Unconfigured as error:
        pytest.fail(str(error))
    if configured is not None:
        request.config.stash[TARGET_KEY] = configured.description
        yield configured
        return
    with harness.local_deployment(tmp_path_factory.mktemp("e2e-stack")) as local:
        request.config.stash[TARGET_KEY] = local.description
        yield local


@pytest.fixture(scope="session")
def prometheus(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusAPI]:
    with contextlib.ExitStack() as cleanup:
        if deployment.prometheus_url:
            yield PrometheusAPI(deployment.prometheus_url, own=False)
            return
        try:
            harness.prometheus_binary()
        except harness.Unconfigured as error:
            pytest.fail(str(error))
        url = cleanup.enter_context(
            harness.prometheus_server(tmp_path_factory.mktemp("e2e-prometheus"), deployment.metrics_targets)
        )
        yield PrometheusAPI(url, own=True)


@pytest.fixture
def gw(deployment: Deployment) -> Iterator[Gateway]:
    client = Gateway(deployment)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def traffic(deployment: Deployment, prometheus: PrometheusAPI) -> None:
    """Every scenario once more, after Prometheus started scraping, so rates have a before and after."""
    client = Gateway(deployment)
    try:
        all_scenarios(client)
    finally:
        client.close()
