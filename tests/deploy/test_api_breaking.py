"""`make breaking` (a step of `make test`) fails on a change that breaks the API, public or internal.

Each test copies protos/, makes one change to the copy and runs the Makefile's own target on it
(``API_PROTOS=<copy>``), so what is checked is the step `make test` runs, against the same inputs
(the main branch's protos when the clone has them, and the committed image of the released API).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT

BUF = ROOT / "tools" / "node_modules" / ".bin" / "buf"
IMAGE = ROOT / "protos" / "api-image.binpb"

pytestmark = pytest.mark.skipif(not BUF.exists(), reason="buf is installed by `make lint-proto` (tools/)")


def make_breaking(protos: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "--no-print-directory", "breaking", f"API_PROTOS={protos}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def edited(tmp_path: Path, path: str, change: Callable[[str], str]) -> Path:
    copy = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", copy)
    target = copy / path
    before = target.read_text()
    after = change(before)
    assert after != before, f"the change did not apply to {path}"
    target.write_text(after)
    return copy


def test_the_protos_as_they_are_pass() -> None:
    result = make_breaking(ROOT / "protos")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"--against {IMAGE}" in result.stdout


def test_a_deleted_field_of_the_public_api_fails(tmp_path: Path) -> None:
    protos = edited(
        tmp_path,
        "qun/gateway/v1/gateway.proto",
        lambda text: re.sub(r"(message JoinGroupSetRequest \{.*?)\n  string password = 3;", r"\1", text, 1, re.S),
    )
    result = make_breaking(protos)
    assert result.returncode != 0
    assert 'Previously present field "3" with name "password" on message "JoinGroupSetRequest"' in result.stdout


def test_a_renumbered_field_of_an_internal_api_fails(tmp_path: Path) -> None:
    """Backends and the gateway of two releases talk during a rolling deploy: internal packages count too."""
    protos = edited(
        tmp_path,
        "qun/groups/v1/groups.proto",
        lambda text: re.sub(r"(\n  string group_set_id = )(\d+);", lambda m: f"{m[1]}{int(m[2]) + 100};", text, 1),
    )
    result = make_breaking(protos)
    assert result.returncode != 0
    assert "qun/groups/v1/groups.proto" in result.stdout


def test_an_added_field_passes(tmp_path: Path) -> None:
    protos = edited(
        tmp_path,
        "qun/gateway/v1/gateway.proto",
        lambda text: text.replace("  string password = 3;\n}", "  string password = 3;\n  string note = 99;\n}", 1),
    )
    result = make_breaking(protos)
    assert result.returncode == 0, result.stdout + result.stderr
