"""The README's quick start, command by command, with qunctl against a running stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

from tests.support.stack import RunningStack, unique


def qunctl(platform: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUN_")}
    env["QUN_TOKEN_SECRET"] = platform.stack.secrets["QUN_TOKEN_SECRET"]
    return subprocess.run(
        [sys.executable, "-m", "cli", "--gateway", platform.stack.gateway.address, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_readme_quick_start(platform: RunningStack) -> None:
    # The stack's clock stands at a fixed instant; the CLI reports facts relative to the
    # real time, so move the stack to now for this walk-through.
    start = platform.now
    platform.set_time(datetime.now(UTC))
    try:
        store, main, fan, stranger = unique("s"), unique("m"), unique("c"), unique("c")
        assert (
            qunctl(
                platform, "report", "store", "--store", store, "--main", main, "--orders", "30", "--level", "1"
            ).returncode
            == 0
        )
        created = qunctl(
            platform,
            "create-group",
            "--as",
            main,
            "--store",
            store,
            "--name",
            "粉丝群",
            "--threshold",
            "follow",
            "--welcome",
            "欢迎!",
        )
        assert created.returncode == 0, created.stderr
        group = json.loads(created.stdout)["groupSet"]
        assert group["subGroups"][0]["name"] == "粉丝群1"

        assert qunctl(platform, "report", "consumer", "--id", fan, "--score", "600", "--follows", store).returncode == 0
        joined = qunctl(platform, "join", "--as", fan, "--group", group["groupSetId"])
        assert joined.returncode == 0, joined.stderr
        assert json.loads(joined.stdout)["newcomerReply"] == "欢迎!"

        assert (
            qunctl(platform, "report", "consumer", "--id", stranger, "--score", "350", "--no-real-name").returncode == 0
        )
        explained = qunctl(platform, "explain-join", "--as", stranger, "--group", group["groupSetId"])
        assert explained.returncode == 3
        rules = sorted(f["ruleId"] for f in json.loads(explained.stdout)["verdict"]["failures"])
        assert rules == ["C1", "C2", "C9"]
        refused = qunctl(platform, "join", "--as", stranger, "--group", group["groupSetId"])
        assert refused.returncode == 1
        assert "FAILED_PRECONDITION" in refused.stderr
        for rule in ("C1", "C2", "C9"):
            assert f"  {rule}" in refused.stderr
    finally:
        platform.set_time(start)
