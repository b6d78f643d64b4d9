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


def test_call_reaches_every_public_rpc(platform: RunningStack, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """Every RPC of qun.gateway.v1, found from the descriptors, reaches its handler: whatever an empty
    request as ops earns (a refusal, a bad argument), never UNIMPLEMENTED, UNKNOWN or INTERNAL."""
    from cli import rpc
    from cli.qunctl import main

    monkeypatch.setenv("QUN_TOKEN_SECRET", platform.stack.secrets["QUN_TOKEN_SECRET"])
    names = [each.name for each in rpc.public_rpcs()]
    assert len(names) >= 58 and "PushService/StreamDeliveries" in names and "FactService/ReportFacts" in names
    codes: dict[str, str] = {}
    for name in names:
        gateway = platform.stack.gateway.address
        code = main(["--gateway", gateway, "call", name, "--as", "ops1", "--role", "ops", "--timeout", "3"])
        out, err = capsys.readouterr()
        codes[name] = err.split(":", 2)[1].strip() if code else "OK"
        if code == 0:
            assert out.lstrip().startswith("{") or not out, (name, out)
    wrong = {name: code for name, code in codes.items() if code in {"UNIMPLEMENTED", "UNKNOWN", "INTERNAL"}}
    assert not wrong, wrong


def test_call_from_another_directory_to_three_services(platform: RunningStack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """qunctl run elsewhere finds the stack's key through QUN_DATA_DIR, and refusals print their rules."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUN_")}
    env["QUN_DATA_DIR"] = str(platform.stack.data_dir)
    env["QUN_GATEWAY_ADDR"] = platform.stack.gateway.address

    def call(*args: str, data_dir: str | None = None) -> subprocess.CompletedProcess[str]:
        run_env = dict(env, QUN_DATA_DIR=data_dir) if data_dir else env
        return subprocess.run(
            [sys.executable, "-m", "cli", "call", *args], capture_output=True, text=True, env=run_env, cwd=tmp_path
        )

    store, main = unique("s"), unique("m")
    reported = call(
        "FactService/ReportFacts",
        "-d",
        json.dumps(
            {
                "facts": [
                    {
                        "store": {
                            "storeId": store,
                            "platform": "PLATFORM_TAOBAO",
                            "mainAccountId": main,
                            "operatingNormally": True,
                        }
                    },
                    {"account": {"accountId": main, "role": "ACCOUNT_ROLE_STORE_MAIN", "storeId": store}},
                ]
            }
        ),
        "--as",
        "upstream1",
        "--role",
        "upstream",
    )
    assert reported.returncode == 0, reported.stderr
    assert json.loads(reported.stdout)["applied"] == 2
    ledger = call("PushService/GetQuotaLedger", "--as", main, "--role", "store_main", "--store", store)
    assert ledger.returncode == 0, ledger.stderr
    assert json.loads(ledger.stdout)["storeId"] == store
    refused = call("CampaignService/CreateActivity", "-d", "{}", "--as", main, "--role", "store_main", "--store", store)
    assert refused.returncode == 1 and refused.stderr.startswith("error: "), refused.stderr
    created = call(
        "GroupService/CreateGroupSet",
        "-d",
        json.dumps({"kind": "GROUP_KIND_STORE", "name": "群", "threshold": {"follow": {}}}),
        "--as",
        main,
        "--role",
        "store_main",
        "--store",
        store,
    )
    assert created.returncode == 1
    assert "FAILED_PRECONDITION" in created.stderr and "  E2" in created.stderr and "figures:" in created.stderr
    # A typo in the JSON or the name is one line, not a traceback.
    typo = call("GroupService/GetGroupSet", "-d", '{"groupSet": "x"}', "--as", "o", "--role", "ops")
    assert typo.returncode == 2 and len(typo.stderr.splitlines()) == 1, typo.stderr
    unknown = call("GroupService/Nope", "--as", "o", "--role", "ops")
    assert unknown.returncode == 2 and "no public RPC" in unknown.stderr
    # Without the stack's key qunctl says so; it never makes a key of its own (every call would fail).
    empty = tmp_path / "elsewhere"
    keyless = call("GroupService/GetGroupSet", "--as", "o", "--role", "ops", data_dir=str(empty))
    assert keyless.returncode == 2 and "no token key" in keyless.stderr, keyless.stderr
    assert not (empty / "secrets.env").exists()
