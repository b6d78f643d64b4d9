"""qunctl — run qun locally and drive its gateway.

    qunctl up                                  all processes on loopback (SQLite)
    qunctl token --as m1 --role store_main --store s1
    qunctl report store --store s1 --main m1 --orders 30 --level 1
    qunctl report consumer --id c1 --score 600 --follows s1
    qunctl create-group --as m1 --store s1 --name "Fans" --threshold follow
    qunctl join --as c1 --group gs_…           (refusals print every failed rule)
    qunctl explain-join --as c1 --group gs_…

Tokens are minted with the local stack's key (QUN_TOKEN_SECRET, else the data
folder's secrets.env), so this is a tool for local use and demos.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from cli import facts
from cli.stack import Stack, load_or_create_secrets
from gateway.auth import Principal, Role, mint_token
from qun.common.v1 import facts_pb2
from qun.common.v1 import groups_pb2 as common_pb2
from qun.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.common.errors import error_info, failures_from_status, field_violations, status_from_error

DEFAULT_GATEWAY = "127.0.0.1:50051"
FAN_LEVELS = {"iron": 2, "diamond": 3, "beloved": 4}
KINDS = {"store": common_pb2.GROUP_KIND_STORE, "live": common_pb2.GROUP_KIND_LIVE}


def token_secret(data_dir: Path) -> str:
    return os.environ.get("QUN_TOKEN_SECRET") or load_or_create_secrets(data_dir)["QUN_TOKEN_SECRET"]


def threshold(spec: str) -> common_pb2.Threshold:
    """``follow``, ``spend:<yuan>``, ``password:<text>``, ``crowd:<id>``, ``fan:iron|diamond|beloved``."""
    kind, _, value = spec.partition(":")
    if kind == "follow":
        return common_pb2.Threshold(follow=common_pb2.FollowThreshold())
    if kind == "spend":
        return common_pb2.Threshold(spend=common_pb2.SpendThreshold(min_spend_fen=round(float(value) * 100)))
    if kind == "password":
        return common_pb2.Threshold(password=common_pb2.PasswordThreshold(password=value))
    if kind == "crowd":
        return common_pb2.Threshold(crowd=common_pb2.CrowdThreshold(crowd_id=value))
    if kind == "fan":
        return common_pb2.Threshold(fan_level=common_pb2.FanLevelThreshold(min_level=FAN_LEVELS[value]))
    raise argparse.ArgumentTypeError(f"unknown threshold {spec!r}")


class Client:
    def __init__(self, address: str, secret: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.groups = gateway_pb2_grpc.GroupServiceStub(self.channel)
        self.facts = gateway_pb2_grpc.FactServiceStub(self.channel)
        self.secret = secret

    def metadata(self, principal: Principal) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {mint_token(self.secret, principal)}")]

    def report(self, facts: list[facts_pb2.Fact]) -> Message:
        upstream = Principal("qunctl", Role.UPSTREAM)
        return self.facts.ReportFacts(
            gateway_pb2.ReportFactsRequest(facts=facts), metadata=self.metadata(upstream), timeout=10
        )


def show(message: Message) -> None:
    print(json_format.MessageToJson(message, ensure_ascii=False, indent=2))


def show_error(error: grpc.RpcError) -> int:
    status = status_from_error(error)  # type: ignore[arg-type]
    print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
    for failure in failures_from_status(status):
        print(f"  {failure.rule_id:<4} {failure.reason}: {failure.message}", file=sys.stderr)
    for violation in field_violations(status):
        print(f"  field {violation.field}: {violation.description}", file=sys.stderr)
    info = error_info(status) if status is not None else None
    if info is not None and info.reason:
        print(f"  reason {info.reason}", file=sys.stderr)
    return 1


def cmd_up(args: argparse.Namespace) -> int:
    stack = Stack(Path(args.data_dir), fixed_ports=not args.free_ports)
    print(f"starting qun (data in {args.data_dir}) …", flush=True)
    started = time.monotonic()
    stack.start()
    stopping = False

    def request_stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Installed before saying so, so a Ctrl-C right after the message still stops cleanly.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    print(f"all processes SERVING in {time.monotonic() - started:.1f}s\n{stack.describe()}", flush=True)
    print("logs in", stack.data_dir / "logs", "— Ctrl-C stops everything", flush=True)
    try:
        while not stopping:
            for name, process in list(stack.processes.items()):
                if process.poll() is not None:
                    print(f"{name} exited with {process.returncode}; stopping", file=sys.stderr)
                    stopping = True
            time.sleep(0.2)
    finally:
        codes = stack.stop()
        print("stopped:", ", ".join(f"{name}={code}" for name, code in codes.items()))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    principal = Principal(args.account, Role(args.role), args.store or "")
    print(mint_token(token_secret(Path(args.data_dir)), principal, ttl_seconds=args.ttl))
    return 0


def cmd_report_store(args: argparse.Namespace, client: Client) -> int:
    # The level is reported as computed 3 days ago, so the T+2 delay (E3) has passed.
    reported = facts.store(
        args.store,
        args.main,
        datetime.now(UTC),
        orders=args.orders,
        level=args.level,
        level_age=timedelta(days=3),
        operating=not args.not_operating,
        platform=facts_pb2.PLATFORM_TMALL if args.platform == "tmall" else facts_pb2.PLATFORM_TAOBAO,
    )
    show(client.report(reported))
    return 0


def cmd_report_consumer(args: argparse.Namespace, client: Client) -> int:
    show(
        client.report(
            facts.consumer(
                args.id, score=args.score, real_name=not args.no_real_name, follows=tuple(args.follows or ())
            )
        )
    )
    return 0


def cmd_create_group(args: argparse.Namespace, client: Client) -> int:
    role = Role.STORE_MAIN if args.kind == "store" else Role.STREAMER
    principal = Principal(args.account, role, args.store or "")
    response = client.groups.CreateGroupSet(
        gateway_pb2.CreateGroupSetRequest(
            request_id=args.request_id or "",
            kind=KINDS[args.kind],
            name=args.name,
            threshold=threshold(args.threshold),
            is_public=not args.private,
            announcement=args.announcement or "",
            newcomer_reply=args.welcome or "",
        ),
        metadata=client.metadata(principal),
        timeout=10,
    )
    show(response)
    return 0


def cmd_join(args: argparse.Namespace, client: Client) -> int:
    consumer = Principal(args.account, Role.CONSUMER)
    response = client.groups.JoinGroupSet(
        gateway_pb2.JoinGroupSetRequest(
            group_set_id=args.group, password=args.password or "", request_id=args.request_id or ""
        ),
        metadata=client.metadata(consumer),
        timeout=10,
    )
    show(response)
    return 0


def cmd_explain_join(args: argparse.Namespace, client: Client) -> int:
    consumer = Principal(args.account, Role.CONSUMER)
    response = client.groups.ExplainJoin(
        gateway_pb2.ExplainJoinRequest(group_set_id=args.group, password=args.password or ""),
        metadata=client.metadata(consumer),
        timeout=10,
    )
    show(response)
    return 0 if response.verdict.allowed else 3


def cmd_get_group(args: argparse.Namespace, client: Client) -> int:
    viewer = Principal(args.account, Role(args.role), args.store or "")
    show(
        client.groups.GetGroupSet(
            gateway_pb2.GetGroupSetRequest(group_set_id=args.group), metadata=client.metadata(viewer), timeout=10
        )
    )
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="qunctl", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    root.add_argument("--data-dir", default=os.environ.get("QUN_DATA_DIR", "data"))
    root.add_argument("--gateway", default=os.environ.get("QUN_GATEWAY_ADDR", DEFAULT_GATEWAY))
    sub = root.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run every process on loopback until Ctrl-C")
    up.add_argument("--free-ports", action="store_true", help="pick free ports instead of 50051…")
    up.set_defaults(func=cmd_up, local=True)

    token = sub.add_parser("token", help="mint a bearer token for local use")
    token.add_argument("--as", dest="account", required=True)
    token.add_argument("--role", required=True, choices=[r.value for r in Role])
    token.add_argument("--store")
    token.add_argument("--ttl", type=int, default=3600)
    token.set_defaults(func=cmd_token, local=True)

    report = sub.add_parser("report", help="report facts as an upstream system").add_subparsers(
        dest="fact", required=True
    )
    store = report.add_parser("store", help="a store, its main account, recent orders and 微淘 level")
    store.add_argument("--store", required=True)
    store.add_argument("--main", required=True)
    store.add_argument("--platform", choices=["taobao", "tmall"], default="taobao")
    store.add_argument("--orders", type=int, default=0, help="paid orders in the last day")
    store.add_argument("--level", type=int, help="微淘 level, reported 3 days ago")
    store.add_argument("--not-operating", action="store_true")
    store.set_defaults(func=cmd_report_store)
    consumer = report.add_parser("consumer", help="a consumer, real-name, 淘气值 and follows")
    consumer.add_argument("--id", required=True)
    consumer.add_argument("--score", type=int, default=600)
    consumer.add_argument("--no-real-name", action="store_true")
    consumer.add_argument("--follows", action="append", metavar="STORE")
    consumer.set_defaults(func=cmd_report_consumer)

    create = sub.add_parser("create-group", help="create a group-set as a store's main account or a streamer")
    create.add_argument("--as", dest="account", required=True)
    create.add_argument("--store", help="the main account's store (store groups)")
    create.add_argument("--kind", choices=list(KINDS), default="store")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--threshold", required=True, help="follow | spend:<yuan> | password:<p> | crowd:<id> | fan:<level>"
    )
    create.add_argument("--private", action="store_true")
    create.add_argument("--announcement")
    create.add_argument("--welcome", help="newcomer auto-reply")
    create.add_argument("--request-id")
    create.set_defaults(func=cmd_create_group)

    for name, func, text in (
        ("join", cmd_join, "join a group-set as a consumer"),
        ("explain-join", cmd_explain_join, "would this consumer be admitted, and if not why"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("--as", dest="account", required=True)
        command.add_argument("--group", required=True)
        command.add_argument("--password")
        if name == "join":
            command.add_argument("--request-id")
        command.set_defaults(func=func)

    get = sub.add_parser("get-group", help="read a group-set")
    get.add_argument("--group", required=True)
    get.add_argument("--as", dest="account", default="qunctl")
    get.add_argument("--role", default="ops", choices=[r.value for r in Role])
    get.add_argument("--store")
    get.set_defaults(func=cmd_get_group)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "local", False):
        return int(args.func(args))
    client = Client(args.gateway, token_secret(Path(args.data_dir)))
    try:
        return int(args.func(args, client))
    except grpc.RpcError as error:
        return show_error(error)
