#!/usr/bin/env python3
"""A faultline client in Python: injects packet loss into a cgroup, lists, gets and cancels it.

The gRPC stubs are generated at run time from the repository's proto/ with grpcio-tools, so
this file is all there is: the contract in proto/faultline/v1 is the only API.

    python faultline_client.py --cgroup /checkout                       # local agent, socket
    python faultline_client.py --endpoint 10.0.3.7:50051 --cgroup /kubepods/pod1

Prints one JSON object per line for each step (health, inject, list, get, cancel) and exits
non-zero on the first error, with a JSON line on stderr naming it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.resources
import json
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import grpc
from google.protobuf import json_format
from grpc_tools import protoc

DEFAULT_ENDPOINT = "unix:///run/faultline/faultline.sock"
DEFAULT_PROTO_DIR = Path(__file__).resolve().parents[2] / "proto"
TIMEOUT = 30.0


class ClientError(Exception):
    pass


def generate_stubs(proto_dir: Path, out: Path) -> tuple[ModuleType, ModuleType]:
    """Compiles proto/faultline/v1/*.proto into `out` and imports service_pb2(_grpc)."""
    files = sorted(str(p.relative_to(proto_dir)) for p in (proto_dir / "faultline/v1").glob("*.proto"))
    if not files:
        raise ClientError(f"no .proto files under {proto_dir}/faultline/v1")
    # google/protobuf/*.proto (duration, timestamp) ship inside grpcio-tools.
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *files,
        ]
    )
    if rc != 0:
        raise ClientError(f"protoc failed ({rc}) on {files}")
    sys.path.insert(0, str(out))
    pb2 = importlib.import_module("faultline.v1.service_pb2")
    pb2_grpc = importlib.import_module("faultline.v1.service_pb2_grpc")
    return pb2, pb2_grpc


def grpc_target(endpoint: str) -> str:
    """A socket path, unix://PATH, http://HOST:PORT or HOST:PORT, as grpcio spells it."""
    if endpoint.startswith("/"):
        return "unix://" + endpoint
    if endpoint.startswith("http://"):
        return endpoint.removeprefix("http://")
    return endpoint


def emit(step: str, **fields) -> None:
    print(json.dumps({"step": step, **fields}, sort_keys=True), flush=True)


def as_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def health(channel: grpc.Channel) -> str:
    """grpc.health.v1 Check for the whole server (service ""), as the Kubernetes probe asks.

    Spoken in raw bytes so that no health stubs are needed: the request (empty service name)
    encodes as no bytes, and the response is field 1, a varint ServingStatus (1 = SERVING).
    """
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    reply = check(b"", timeout=TIMEOUT)
    status = reply[1] if reply[:1] == b"\x08" and len(reply) >= 2 else 0
    return {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}.get(status, str(status))


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="faultline-stubs-") as out:
        pb2, pb2_grpc = generate_stubs(args.proto_dir, Path(out))
        # The enums and messages of the other files, reached through the service module.
        fault_pb2 = importlib.import_module("faultline.v1.fault_pb2")
        target_pb2 = importlib.import_module("faultline.v1.target_pb2")
        experiment_pb2 = importlib.import_module("faultline.v1.experiment_pb2")

        target = grpc_target(args.endpoint)
        with grpc.insecure_channel(target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=10)
            except grpc.FutureTimeoutError:
                raise ClientError(f"no agent answers at {args.endpoint}") from None
            status = health(channel)
            emit("health", status=status)
            if status != "SERVING":
                raise ClientError(f"agent health is {status}")

            stub = pb2_grpc.FaultServiceStub(channel)
            request = pb2.InjectRequest(
                target=target_pb2.Target(cgroup_path=args.cgroup),
                fault=fault_pb2.Fault(
                    net_loss=fault_pb2.NetLoss(
                        percent=args.percent,
                        filter=fault_pb2.PacketFilter(direction=fault_pb2.DIRECTION_EGRESS),
                    )
                ),
                labels=dict(args.label),
            )
            request.duration.FromSeconds(args.duration)
            experiment = stub.Inject(request, timeout=TIMEOUT).experiment
            emit("inject", experiment=as_dict(experiment))
            if experiment.state != experiment_pb2.STATE_ACTIVE:
                raise ClientError(f"injected experiment is {experiment_pb2.State.Name(experiment.state)}")
            exp_id = experiment.id

            listed = stub.List(pb2.ListRequest(), timeout=TIMEOUT).experiments
            ids = [e.id for e in listed]
            emit("list", ids=ids, experiments=[as_dict(e) for e in listed])
            if exp_id not in ids:
                raise ClientError(f"experiment {exp_id} missing from List")

            got = stub.Get(pb2.GetRequest(id=exp_id), timeout=TIMEOUT)
            emit("get", experiment=as_dict(got))

            cancelled = stub.Cancel(pb2.CancelRequest(id=exp_id), timeout=TIMEOUT)
            emit("cancel", experiment=as_dict(cancelled))
            if cancelled.state != experiment_pb2.STATE_CANCELLED:
                raise ClientError(
                    f"experiment {exp_id} is {experiment_pb2.State.Name(cancelled.state)} after Cancel"
                )


def label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--endpoint",
        default=DEFAULT_ENDPOINT,
        help="agent: a socket path, unix://PATH, HOST:PORT or http://HOST:PORT (default %(default)s)",
    )
    parser.add_argument("--cgroup", required=True, help="target cgroup, relative to the cgroup2 mount")
    parser.add_argument("--percent", type=float, default=10.0, help="packets dropped, 0 < P <= 100")
    parser.add_argument("--duration", type=int, default=60, help="seconds the fault lasts unless cancelled")
    parser.add_argument(
        "--label", type=label, action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    parser.add_argument("--proto-dir", type=Path, default=DEFAULT_PROTO_DIR, help="default: %(default)s")
    args = parser.parse_args()
    if not args.label:
        args.label = [("client", "python-example")]
    try:
        run(args)
    except grpc.RpcError as e:
        print(json.dumps({"error": e.code().name, "details": e.details()}), file=sys.stderr)
        return 1
    except ClientError as e:
        print(json.dumps({"error": "client", "details": str(e)}), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
