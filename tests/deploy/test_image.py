"""The image: Dockerfile structure (no Docker engine here to build it), the entry point it runs,
and the gRPC health check compose uses — the last two for real, as processes."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.stack import free_port
from deploy.entrypoint import resolve
from services.common.migrations import SERVICES_WITH_DATABASES
from services.common.processes import MODULES, PROCESSES
from tests.deploy.conftest import DEPLOY, ROOT

DOCKERFILE = DEPLOY / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def test_base_image_is_an_argument_defaulting_to_python_slim() -> None:
    before_from = instructions()[: next(i for i, (word, _) in enumerate(instructions()) if word == "FROM")]
    assert ("ARG", "BASE_IMAGE=python:3.11-slim") in before_from
    for stage in stages():
        assert stage[0][1].split()[0] == "${BASE_IMAGE}", stage[0]


def test_final_stage_runs_as_a_non_root_user_with_an_exec_form_entrypoint() -> None:
    final = stages()[-1]
    users = [args for word, args in final if word == "USER"]
    assert users, "the final stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    entrypoints = [args for word, args in final if word == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["python", "-m", "deploy.entrypoint"], "exec form"
    assert not any(word == "RUN" for word, _ in final[final.index(("USER", users[-1])) :])


def test_image_carries_the_code_every_process_imports() -> None:
    copied = [args.split() for word, args in stages()[-1] if word == "COPY"]
    # From the build context (COPY --from=build brings the venv and gen/ from the build stage).
    sources = {part for args in copied if not args[0].startswith("--from") for part in args[:-1]}
    packages = {module.split(".")[0] for module in MODULES.values()} | {"services", "cli", "config"}
    assert packages <= sources, f"not copied: {packages - sources}"
    assert {"deploy/entrypoint.py", "deploy/healthcheck.py"} <= sources
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for source in sources:
        assert f"!{source}" in ignore or f"!{source}/**" in ignore, f"{source} is excluded from the build context"
    build = stages()[0]
    assert any("grpc_tools.protoc" in args for word, args in build if word == "RUN"), "code generation at build time"


def test_entry_point_maps_every_process_and_migration() -> None:
    for name in PROCESSES:
        module, argv = resolve([name])
        assert module == MODULES[name] and importlib.util.find_spec(module) is not None, name
        assert argv == [name]
    for service in SERVICES_WITH_DATABASES:
        assert resolve(["migrate", service]) == ("services.common.migrations", ["migrate", service])
        assert resolve(["wait-migrated", service])[0] == "deploy.entrypoint"
    assert resolve(["qunctl", "token", "--as", "c1"]) == ("cli", ["qunctl", "token", "--as", "c1"])


@pytest.mark.parametrize(
    "argv", [[], ["nope"], ["migrate"], ["migrate", "gateway"], ["groups", "extra"], ["wait-migrated", "x"]]
)
def test_entry_point_refuses_what_it_does_not_know(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        resolve(argv)
    assert exited.value.code not in (0, None)


def entrypoint(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.entrypoint", *args],
        check=False,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUN_")}
    return {**env, **extra}


def test_migrate_then_wait_migrated(tmp_path: Path) -> None:
    env = base_env(QUN_DATABASE_URL=f"sqlite:///{tmp_path / 'groups.db'}", QUN_MIGRATION_WAIT_SECONDS="1")
    waited = entrypoint("wait-migrated", "groups", env=env)
    assert waited.returncode == 1 and "not migrated" in waited.stderr
    assert entrypoint("migrate", "groups", env=env).returncode == 0
    waited = entrypoint("wait-migrated", "groups", env=env)
    assert waited.returncode == 0, waited.stderr
    assert "database at" in waited.stdout


def health(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.healthcheck", str(port)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_health_check_fails_when_nothing_listens() -> None:
    result = health(free_port())
    assert result.returncode == 1 and "UNAVAILABLE" in result.stdout
    usage = subprocess.run(
        [sys.executable, "-m", "deploy.healthcheck"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=base_env(),
    )
    assert usage.returncode == 2


def test_a_service_started_by_the_entry_point_is_healthy_and_drains_on_sigterm(tmp_path: Path) -> None:
    """What a container does: migrate, serve, pass the health check, exit 0 on SIGTERM."""
    grpc_port = free_port()
    env = base_env(
        QUN_DATABASE_URL=f"sqlite:///{tmp_path / 'groups.db'}",
        QUN_INTERNAL_TOKEN="internal-token-for-the-image-test",
        QUN_HOST="127.0.0.1",
        QUN_GRPC_PORT=str(grpc_port),
        QUN_METRICS_PORT=str(free_port()),
        QUN_GRACE_SECONDS="1",
        QUN_LOG_LEVEL="WARNING",
    )
    assert entrypoint("migrate", "groups", env=env).returncode == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.entrypoint", "groups"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while (result := health(grpc_port)).returncode != 0:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            assert time.monotonic() < deadline, result.stdout
            time.sleep(0.2)
        assert "SERVING" in result.stdout
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_image_installs_only_locked_runtime_packages_checked_by_hash() -> None:
    """Every install in the image is uv.lock's (hashes checked by uv) or pinned with --require-hashes;
    the runtime venv gets no development group."""
    runs = [args for word, args in stages()[0] if word == "RUN"]
    installs = [args for args in runs if "install" in args or "sync" in args]
    assert installs
    for args in installs:
        for command in args.split("&&"):
            if "pip install" in command:
                assert "--require-hashes" in command, command
            if "uv sync" in command:
                assert "--locked" in command, command
    runtime = [args for args in installs if "UV_PROJECT_ENVIRONMENT=/opt/qun" in args]
    assert runtime and all("--no-dev" in args for args in runtime), runtime
    assert not any("requirements" in args and "uv-requirements" not in args for args in runs)
