"""qunctl — run qun locally and drive its gateway.

    qunctl up [--port-base 60050] [--prometheus]   all processes on loopback (SQLite)
    qunctl down                                stops the stack running from the data folder
    qunctl token --as m1 --role store_main --store s1
    qunctl report store --store s1 --main m1 --orders 30 --level 1
    qunctl report consumer --id c1 --score 600 --follows s1
    qunctl create-group --as m1 --store s1 --name "Fans" --threshold follow
    qunctl join --as c1 --group gs_…           (refusals print every failed rule)
    qunctl explain-join --as c1 --group gs_…

Tokens are minted with the local stack's key (QUN_TOKEN_SECRET, else the data
folder's secrets.env), so this is a tool for local use and demos. The data folder is
QUN_DATA_DIR, else the checkout's data/ (from any directory); the gateway is --gateway,
QUN_GATEWAY_ADDR, the port base (--port-base, QUN_PORT_BASE), the stack running from the
data folder, or 127.0.0.1:50051.

Kept as one module (about 560 lines): one command-line program, one small function per
subcommand; the stack, the RPC caller and the fact builders are modules of their own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from cli import facts, rpc
from cli.ports import holders, one_line
from cli.stack import (
    PORT_BASE_ENV,
    SECRETS_FILE,
    Stack,
    check_environment,
    dying_with_this_process,
    free_port,
    http_port_for,
    is_stack_supervisor,
    passed_through,
    port_base,
    ports_for,
    prometheus_port,
    read_secrets,
    read_state,
)
from gateway.auth import Principal, Role, mint_token
from qun.common.v1 import facts_pb2
from qun.common.v1 import groups_pb2 as common_pb2
from qun.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.common.clock import clock_from_env
from services.common.errors import error_info, failures_from_status, field_violations, status_from_error
from services.common.validation import ID_PATTERN, ID_RULE

DEFAULT_GATEWAY = "127.0.0.1:50051"
# The checkout this qunctl runs from (an editable install: `make`, `uv sync`), whose data/ the
# local stack uses; an installed qunctl (the image) has none and uses ./data.
CHECKOUT = Path(__file__).resolve().parents[1]
STOP_WAIT_SECONDS = 30.0
MAX_TOKEN_TTL_SECONDS = 366 * 24 * 3600  # a local token lives at most a year


class Refused(Exception):
    """A one-line answer for the person at the terminal (no traceback): what is wrong, what to do."""


def default_data_dir() -> Path:
    if os.environ.get("QUN_DATA_DIR"):
        return Path(os.environ["QUN_DATA_DIR"])
    if (CHECKOUT / "pyproject.toml").exists() and (CHECKOUT / "cli").is_dir():
        return CHECKOUT / "data"
    return Path("data")


def gateway_address(args: argparse.Namespace) -> str:
    """--gateway, QUN_GATEWAY_ADDR, the port base, the stack running from the data folder, the default."""
    if args.gateway:
        return str(args.gateway)
    if os.environ.get("QUN_GATEWAY_ADDR"):
        return os.environ["QUN_GATEWAY_ADDR"]
    base = args.port_base if args.port_base is not None else port_base(os.environ.get(PORT_BASE_ENV))
    if base is not None:
        return f"127.0.0.1:{ports_for(base)['gateway'][0]}"
    state = read_state(Path(args.data_dir))
    if state is not None:
        return str(state["gateway"])
    return DEFAULT_GATEWAY


FAN_LEVELS = {
    "iron": common_pb2.FAN_LEVEL_IRON,
    "diamond": common_pb2.FAN_LEVEL_DIAMOND,
    "beloved": common_pb2.FAN_LEVEL_BELOVED,
}
KINDS = {"store": common_pb2.GROUP_KIND_STORE, "live": common_pb2.GROUP_KIND_LIVE}


def stack_now(args: argparse.Namespace) -> datetime:
    """The time the stack's processes see: QUN_CLOCK_FILE's (or that of the stack running from the
    data folder), so facts reported "yesterday" are yesterday on a stack run at another time."""
    path = os.environ.get("QUN_CLOCK_FILE")
    if not path:
        state = read_state(Path(args.data_dir))
        path = str(state.get("clock_file") or "") if state is not None else ""
    return clock_from_env({"QUN_CLOCK_FILE": path}).now()


def token_secret(data_dir: Path) -> str:
    """QUN_TOKEN_SECRET, else the local stack's key; never a new key (every call would fail)."""
    secret = os.environ.get("QUN_TOKEN_SECRET") or read_secrets(data_dir).get("QUN_TOKEN_SECRET")
    if not secret:
        raise Refused(
            f"no token key: {data_dir / SECRETS_FILE} does not exist; start the local stack (make up), "
            "pass --data-dir, or set QUN_TOKEN_SECRET to the gateway's key"
        )
    return secret


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
        reply: Message = self.facts.ReportFacts(
            gateway_pb2.ReportFactsRequest(facts=facts), metadata=self.metadata(upstream), timeout=10
        )
        return reply


def show(message: Message) -> None:
    print(json_format.MessageToJson(message, ensure_ascii=False, indent=2))


def show_error(error: grpc.RpcError) -> int:
    status = status_from_error(error)
    print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
    for failure in failures_from_status(status):
        print(f"  {failure.rule_id:<4} {failure.reason}: {failure.message}", file=sys.stderr)
        if failure.figures:
            figures = ", ".join(f"{name} {value}" for name, value in sorted(failure.figures.items()))
            print(f"       figures: {figures}", file=sys.stderr)
    for violation in field_violations(status):
        print(f"  field {violation.field}: {violation.description}", file=sys.stderr)
    info = error_info(status) if status is not None else None
    if info is not None and info.reason:
        print(f"  reason {info.reason}", file=sys.stderr)
    return 1


def prometheus_config(stack: Stack) -> str:
    """A scrape job per process, named after it as in deploy/prometheus, with the project's rules.

    JSON, which Prometheus reads as YAML: `make up` installs no YAML library.
    """
    rules = CHECKOUT / "deploy" / "prometheus" / "rules.yml"
    config = {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": [str(rules)] if rules.exists() else [],
        "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": [f"127.0.0.1:{endpoint.metrics_port}"]}]}
            for name, endpoint in stack.endpoints.items()
        ],
    }
    return json.dumps(config, indent=2)


def start_prometheus(stack: Stack, port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("prometheus")
    if binary is None:
        raise Refused("PROMETHEUS=1 needs `prometheus` on PATH: `make deploy-tools` installs Debian's package")
    folder = stack.data_dir / "prometheus"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prometheus.yml").write_text(prometheus_config(stack))
    log = open(stack.data_dir / "logs" / "prometheus.log", "ab")  # noqa: SIM115 - owned by the child
    with log:
        return subprocess.Popen(
            dying_with_this_process(
                [
                    binary,
                    f"--config.file={folder / 'prometheus.yml'}",
                    f"--storage.tsdb.path={folder / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ]
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def refuse_if_running(data_dir: Path, base: int | None, prometheus: bool) -> None:
    """Before anything is migrated or started: no stack runs from this data folder, and every port
    is free; otherwise one line saying which process holds which port."""
    state = read_state(data_dir)
    ports = ports_for(base)
    names = {grpc: name for name, (grpc, _) in ports.items()}
    names.update({metrics: f"{name} metrics" for name, (_, metrics) in ports.items()})
    names[http_port_for(base)] = "gateway http"
    if prometheus:
        names[prometheus_port(base)] = "prometheus"
    taken = holders(sorted(names))
    hint = "`make down` stops a stack; `make up PORT_BASE=…` (QUN_PORT_BASE) moves this one"
    if taken:
        raise Refused(f"cannot start: ports in use: {one_line(taken, names)}; {hint}")
    if state is not None:
        raise Refused(
            f"cannot start: a qun stack is already running from {data_dir} "
            f"(pid {state['supervisor']}, gateway {state['gateway']}) on its databases; `make down` stops it"
        )


def say(*words: object, stream: TextIO | None = None) -> None:
    """Print, unless the terminal is gone (closed while the stack runs): stopping must go on."""
    with contextlib.suppress(OSError, ValueError):
        print(*words, file=stream or sys.stdout, flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir)
    base = args.port_base if args.port_base is not None else port_base(os.environ.get(PORT_BASE_ENV))
    if not args.free_ports:
        refuse_if_running(data_dir, base, args.prometheus)
    stack = Stack(
        data_dir,
        fixed_ports=not args.free_ports,
        port_base=base,
        extra_env=passed_through(dict(os.environ)),
        die_with_supervisor=True,
    )
    for name in stack.endpoints:
        problem = check_environment(name, stack.env_for(name))
        if problem is not None:
            raise Refused(problem)
    prometheus_at = 0 if not args.prometheus else (prometheus_port(base) if not args.free_ports else free_port())
    say(f"starting qun (data in {args.data_dir}) …")
    started = time.monotonic()
    stopping = False

    def request_stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    # While starting, Ctrl-C, SIGTERM (`make down`) and a closed terminal interrupt the start, which
    # stops what it started; once running, they end the loop below, which stops everything.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    stack.write_state()
    prometheus: subprocess.Popen[bytes] | None = None
    try:
        try:
            stack.start()
            if prometheus_at:
                prometheus = start_prometheus(stack, prometheus_at)
        except KeyboardInterrupt:
            stack.stop()
            say("interrupted while starting; stopped")
            return 130
        except (RuntimeError, TimeoutError) as error:
            raise Refused(f"cannot start: {error}") from None
        prometheus_url = f"http://127.0.0.1:{prometheus_at}" if prometheus_at else ""
        stack.write_state(prometheus_url)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, request_stop)
        say(f"all processes SERVING in {time.monotonic() - started:.1f}s\n{stack.describe()}")
        if prometheus_url:
            say(f"prometheus   {prometheus_url}")
        say("logs in", stack.data_dir / "logs", "— Ctrl-C or `make down` stops everything")
        while not stopping:
            for name, process in list(stack.processes.items()):
                if process.poll() is not None:
                    say(f"{name} exited with {process.returncode}; stopping", stream=sys.stderr)
                    stopping = True
            time.sleep(0.2)
        codes = stack.stop()
        say("stopped:", ", ".join(f"{name}={code}" for name, code in codes.items()))
    finally:
        stack.stop()
        if prometheus is not None and prometheus.poll() is None:
            prometheus.terminate()
            prometheus.wait(10)
        stack.forget_state()
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stops the stack running from the data folder, started in any terminal: SIGTERM to its
    supervisor, which stops every process in order, as Ctrl-C does."""
    data_dir = Path(args.data_dir)
    state = read_state(data_dir)
    if state is None:
        say(f"no qun stack is running from {data_dir}")
        return 0
    supervisor = int(str(state["supervisor"]))
    os.kill(supervisor, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    while is_stack_supervisor(supervisor):
        if time.monotonic() > deadline:
            os.kill(supervisor, signal.SIGKILL)  # its processes die with it (PR_SET_PDEATHSIG)
            say(f"the stack (pid {supervisor}) did not stop in {STOP_WAIT_SECONDS:.0f}s; killed it")
            return 1
        time.sleep(0.1)
    say(f"stopped the qun stack running from {data_dir} (pid {supervisor}, gateway {state['gateway']})")
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
        stack_now(args),
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


def cmd_call(args: argparse.Namespace, client: Client) -> int:
    """Any public RPC with a token minted for ``--as``/``--role``/``--store``; JSON in and out."""
    try:
        target = rpc.find(args.rpc)
        request = target.request(args.data)
    except (rpc.UnknownRpc, json_format.ParseError) as error:
        raise Refused(str(error)) from None
    principal = Principal(args.account, Role(args.role), args.store or "")
    timeout = args.timeout if args.timeout > 0 else None
    for response in target.invoke(client.channel, request, client.metadata(principal), timeout):
        show(response)
    return 0


def cmd_list_rpcs(args: argparse.Namespace) -> int:
    for each in rpc.public_rpcs():
        request = each.method.input_type.full_name
        print(f"{each.name:<48} {request}{'  (streams responses)' if each.streams_responses else ''}")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="qunctl", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    root.add_argument("--data-dir", type=Path, default=default_data_dir(), help="the local stack's data folder")
    root.add_argument("--gateway", help="host:port (default: see above)")
    root.add_argument("--port-base", type=port_base_argument, help=f"as {PORT_BASE_ENV}: gateway on BASE+1")
    sub = root.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run every process on loopback until Ctrl-C or `qunctl down`")
    up.add_argument("--free-ports", action="store_true", help="pick free ports instead of 50051…")
    up.add_argument("--prometheus", action="store_true", help="also a Prometheus scraping every process")
    up.set_defaults(func=cmd_up, local=True)

    down = sub.add_parser("down", help="stop the stack running from the data folder (any terminal)")
    down.set_defaults(func=cmd_down, local=True)

    call = sub.add_parser(
        "call",
        help='call any public RPC: qunctl call GroupService/GetGroupSet -d \'{"groupSetId": "gs_…"}\' --as … --role …',
    )
    call.add_argument("rpc", nargs="?", help="Service/Method of qun.gateway.v1 (--list shows them)")
    call.add_argument("-d", "--data", default="{}", help="the request as JSON (json_format: camelCase fields)")
    call.add_argument("--as", dest="account", type=id_argument, help="the caller's account id (the token's sub)")
    call.add_argument("--role", choices=[r.value for r in Role])
    call.add_argument("--store", type=id_argument, help="the caller's store (store roles)")
    call.add_argument("--timeout", type=float, default=10.0, help="seconds; 0 waits for ever (a followed stream)")
    call.add_argument("--list", action="store_true", help="list every public RPC and its request type")
    call.set_defaults(func=cmd_call)

    token = sub.add_parser("token", help="mint a bearer token for local use")
    token.add_argument("--as", dest="account", type=id_argument, required=True)
    token.add_argument("--role", required=True, choices=[r.value for r in Role])
    token.add_argument("--store", type=id_argument)
    token.add_argument("--ttl", type=ttl_argument, default=3600, help=f"seconds, 1 to {MAX_TOKEN_TTL_SECONDS}")
    token.set_defaults(func=cmd_token, local=True)

    report = sub.add_parser("report", help="report facts as an upstream system").add_subparsers(
        dest="fact", required=True
    )
    store = report.add_parser("store", help="a store, its main account, recent orders and 微淘 level")
    store.add_argument("--store", type=id_argument, required=True)
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
    create.add_argument("--as", dest="account", type=id_argument, required=True)
    create.add_argument("--store", type=id_argument, help="the main account's store (store groups)")
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
        command.add_argument("--as", dest="account", type=id_argument, required=True)
        command.add_argument("--group", required=True)
        command.add_argument("--password")
        if name == "join":
            command.add_argument("--request-id")
        command.set_defaults(func=func)

    get = sub.add_parser("get-group", help="read a group-set")
    get.add_argument("--group", required=True)
    get.add_argument("--as", dest="account", type=id_argument, default="qunctl")
    get.add_argument("--role", default="ops", choices=[r.value for r in Role])
    get.add_argument("--store", type=id_argument)
    get.set_defaults(func=cmd_get_group)
    return root


def id_argument(value: str) -> str:
    """An account or store id as the gateway reads it from a token; it refuses a token naming any other."""
    if not ID_PATTERN.match(value):
        raise argparse.ArgumentTypeError(f"must be {ID_RULE}, got {value!r}")
    return value


def ttl_argument(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_TOKEN_TTL_SECONDS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_TOKEN_TTL_SECONDS} seconds, got {value!r}")
    return int(value)


def port_base_argument(value: str) -> int | None:
    try:
        return port_base(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    command = parser()
    args = command.parse_args(argv)
    if args.command == "call" and not args.list:
        missing = [
            flag for flag, value in (("RPC", args.rpc), ("--as", args.account), ("--role", args.role)) if not value
        ]
        if missing:
            command.error(f"call needs {', '.join(missing)}")
    try:
        if args.command == "call" and args.list:
            return cmd_list_rpcs(args)
        if getattr(args, "local", False):
            return int(args.func(args))
        client = Client(gateway_address(args), token_secret(Path(args.data_dir)))
        try:
            return int(args.func(args, client))
        except grpc.RpcError as error:
            return show_error(error)
    except (Refused, ValueError) as error:
        say(f"qunctl: {' '.join(str(error).split())}", stream=sys.stderr)  # one line
        return 2
    except BrokenPipeError:  # `qunctl call … | head`: the reader had enough
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
