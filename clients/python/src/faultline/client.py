"""A small typed client of the faultline agent's gRPC API (proto/faultline/v1)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, List

import grpc
from google.protobuf import json_format

from faultline.faults import Duration, Fault, Target, duration_json
from faultline.v1 import experiment_pb2, fault_pb2, service_pb2, service_pb2_grpc, target_pb2

DEFAULT_ENDPOINT = "unix:///run/faultline/faultline.sock"

#: Experiment states by their short names, as the CLI prints them.
STATES = ("pending", "active", "expired", "cancelled", "failed")
ENDED = frozenset({"expired", "cancelled", "failed", "aborted"})


class FaultlineError(Exception):
    """Any error from the agent or on the way to it: `code` is the gRPC status code
    (grpc.StatusCode.NOT_FOUND, ...), `code_name` its name ("NOT_FOUND"), `message` what
    the agent said (it names the field and the allowed values for INVALID_ARGUMENT)."""

    def __init__(self, code: grpc.StatusCode, message: str, method: str = "") -> None:
        self.code = code
        self.code_name = code.name
        self.message = message
        self.method = method
        where = f"{method}: " if method else ""
        super().__init__(f"{where}{code.name}: {message}")


def _time(msg: Any, name: str) -> datetime | None:
    if not msg.HasField(name):
        return None
    dt: datetime = getattr(msg, name).ToDatetime()
    return dt


def _as_dict(msg: Any) -> dict[str, Any]:
    d: dict[str, Any] = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    return d


@dataclass
class Experiment:
    """One experiment as the agent reports it."""

    id: str
    state: str  # "pending", "active", "expired", "cancelled", "failed"
    fault_kind: str  # the Fault oneof name, e.g. "net_partition"
    fault: dict[str, Any]  # proto JSON of the fault's fields
    target: dict[str, Any]  # proto JSON of the Target
    cgroup_path: str  # resolved, relative to the cgroup2 mount
    labels: dict[str, str]
    duration_s: float
    counters: dict[str, int]  # every Counters field, 0 included
    backend: str = ""
    reason: str = ""
    note: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    deadline: datetime | None = None
    ended_at: datetime | None = None
    first_hit_at: datetime | None = None
    # Drill control: the stop conditions (proto JSON), which one ended it and what it saw
    # ({"condition", "value"}; aborted only), the no-hit mark, restarts followed.
    stop_conditions: list[dict[str, Any]] = field(default_factory=list)
    abort: dict[str, str] | None = None
    no_hit: bool = False
    followed: int = 0
    raw: experiment_pb2.Experiment | None = field(default=None, repr=False, compare=False)

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @classmethod
    def from_proto(cls, e: experiment_pb2.Experiment) -> Experiment:
        kind = e.fault.WhichOneof("kind") or ""
        counters = {f.name: int(getattr(e.counters, f.name)) for f in e.counters.DESCRIPTOR.fields}
        return cls(
            id=e.id,
            state=experiment_pb2.State.Name(e.state).removeprefix("STATE_").lower(),
            fault_kind=kind,
            fault=_as_dict(getattr(e.fault, kind)) if kind else {},
            target=_as_dict(e.target),
            cgroup_path=e.resolved_target.cgroup_path,
            labels=dict(e.labels),
            duration_s=e.duration.ToTimedelta().total_seconds(),
            counters=counters,
            backend=e.backend,
            reason=e.reason,
            note=e.note,
            created_at=_time(e, "created_at"),
            started_at=_time(e, "started_at"),
            deadline=_time(e, "deadline"),
            ended_at=_time(e, "ended_at"),
            first_hit_at=_time(e, "first_hit_at"),
            stop_conditions=[_as_dict(c) for c in e.stop_conditions],
            abort=(
                {"condition": e.abort.condition, "value": e.abort.value}
                if e.HasField("abort")
                else None
            ),
            no_hit=e.no_hit,
            followed=e.followed,
            raw=e,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 strings (what Chaos Toolkit journals keep)."""
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if k == "raw":
                continue
            out[k] = v.isoformat() + "Z" if isinstance(v, datetime) else v
        return out


@dataclass
class FaultSupport:
    fault: str
    supported: bool
    backend: str
    reason: str


@dataclass
class Capabilities:
    agent_version: str
    kernel_release: str
    cgroup2_mount: str
    btf: bool
    probes: dict[str, bool]
    faults: dict[str, FaultSupport]

    def supports(self, fault: str) -> bool:
        f = self.faults.get(fault)
        return bool(f and f.supported)


def _read(path: str | os.PathLike[str] | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


class Client:
    """Talks to one agent.

    endpoint: "unix:///run/faultline/faultline.sock" (the default) or a socket path;
    "https://HOST:PORT" with `ca_cert` (the CA of the agent's certificate; default: the
    system roots), `client_cert` and `client_key` for agents that require mutual TLS, and
    `token` for agents started with --token-file; "http://HOST:PORT" for --insecure-tcp.
    Every method raises FaultlineError on failure.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        ca_cert: str | os.PathLike[str] | None = None,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        token: str | None = None,
        server_name: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        if endpoint.startswith("/"):
            endpoint = "unix://" + endpoint
        if endpoint.startswith("unix:"):
            # No channel option: the agent serves the socket path grpcio sends as :authority.
            self._channel = grpc.insecure_channel(endpoint)
        elif endpoint.startswith("https://"):
            if bool(client_cert) != bool(client_key):
                raise ValueError("client_cert and client_key go together")
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(ca_cert),
                private_key=_read(client_key),
                certificate_chain=_read(client_cert),
            )
            options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
            self._channel = grpc.secure_channel(endpoint.removeprefix("https://"), creds, options)
        elif endpoint.startswith("http://"):
            self._channel = grpc.insecure_channel(endpoint.removeprefix("http://"))
        else:
            raise ValueError(
                f"endpoint {endpoint!r}: expected unix:///PATH, a socket path, "
                "https://HOST:PORT or http://HOST:PORT"
            )
        self._stub = service_pb2_grpc.FaultServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(
                request, timeout=self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
            details = e.details() if hasattr(e, "details") else str(e)
            raise FaultlineError(code, details or "", method) from None

    def inject(
        self,
        target: Target | str | Mapping[str, Any],
        fault: Fault | Mapping[str, Any],
        duration: Duration,
        labels: Mapping[str, str] | None = None,
        *,
        stop_conditions: Sequence[Mapping[str, Any]] = (),
        expect_hit_within: Duration | None = None,
        follow: bool = False,
    ) -> Experiment:
        """Applies `fault` to `target` for `duration`; returns once it is in effect.

        fault: a faults.* dataclass, or the proto JSON of a Fault ({"net_loss": {...}}).
        stop_conditions: proto JSON of StopCondition, e.g. {"oom_kill": {}},
        {"no_processes": {}}, {"pressure": {"resource": "RESOURCE_MEMORY", "above_percent":
        40}}, {"http": {"url": "http://127.0.0.1:8080/healthz", "failures": 3}}: the first
        that holds ends the experiment as "aborted".
        """
        request = self._request(target, fault, duration, labels, stop_conditions, expect_hit_within, follow)
        return Experiment.from_proto(self._call("Inject", request).experiment)

    def plan(
        self,
        target: Target | str | Mapping[str, Any],
        fault: Fault | Mapping[str, Any],
        duration: Duration,
        labels: Mapping[str, str] | None = None,
        *,
        stop_conditions: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        """A dry run: checks the inject as the agent would apply it (target, policy, kernel)
        and returns what it would attach where (the Plan as proto JSON); applies nothing."""
        request = self._request(target, fault, duration, labels, stop_conditions, None, False)
        request.dry_run = True
        return _as_dict(self._call("Inject", request).plan)

    def _request(
        self,
        target: Target | str | Mapping[str, Any],
        fault: Fault | Mapping[str, Any],
        duration: Duration,
        labels: Mapping[str, str] | None,
        stop_conditions: Sequence[Mapping[str, Any]],
        expect_hit_within: Duration | None,
        follow: bool,
    ) -> service_pb2.InjectRequest:
        fault_json = fault.to_json() if isinstance(fault, Fault) else dict(fault)
        request = service_pb2.InjectRequest(
            target=json_format.ParseDict(Target.of(target).json, target_pb2.Target()),
            fault=json_format.ParseDict(fault_json, fault_pb2.Fault()),
            labels=dict(labels or {}),
            stop_conditions=[
                json_format.ParseDict(dict(c), experiment_pb2.StopCondition())
                for c in stop_conditions
            ],
            follow=follow,
        )
        request.duration.FromJsonString(duration_json(duration))
        if expect_hit_within is not None:
            request.expect_hit_within.FromJsonString(duration_json(expect_hit_within))
        return request

    def halt(self, reason: str = "") -> List[Experiment]:
        """The emergency stop: ends every active experiment and refuses new ones until
        resume(); returns those it ended."""
        r = self._call("Halt", service_pb2.HaltRequest(reason=reason))
        return [Experiment.from_proto(e) for e in r.ended]

    def resume(self) -> bool:
        """Lifts a halt; whether the agent was halted."""
        return bool(self._call("Resume", service_pb2.ResumeRequest()).was_halted)

    def get(self, experiment_id: str) -> Experiment:
        return Experiment.from_proto(self._call("Get", service_pb2.GetRequest(id=experiment_id)))

    def list(
        self, labels: Mapping[str, str] | None = None, states: Sequence[str] = ()
    ) -> List[Experiment]:
        """Experiments carrying all of `labels`, in any of `states` ("active", ...; none: all)."""
        request = service_pb2.ListRequest(
            labels=dict(labels or {}),
            states=[experiment_pb2.State.Value("STATE_" + s.upper()) for s in states],
        )
        return [Experiment.from_proto(e) for e in self._call("List", request).experiments]

    def cancel(self, experiment_id: str) -> Experiment:
        """Ends an experiment now; one that already ended comes back unchanged."""
        return Experiment.from_proto(
            self._call("Cancel", service_pb2.CancelRequest(id=experiment_id))
        )

    def cancel_by_label(self, labels: Mapping[str, str]) -> List[Experiment]:
        """Cancels every pending or active experiment carrying all of `labels` (at least one
        label: an empty selector would match everything)."""
        if not labels:
            raise ValueError("cancel_by_label needs at least one label")
        live = self.list(labels, states=("pending", "active"))
        return [self.cancel(e.id) for e in live]

    def watch(
        self, experiment_id: str = "", send_initial: bool = True
    ) -> Iterator[tuple[str, Experiment]]:
        """Streams (event type, experiment): "state", "snapshot", "first_hit", "no_hit",
        "followed"."""
        request = service_pb2.WatchRequest(id=experiment_id, send_initial=send_initial)
        try:
            for ev in self._stub.Watch(request, metadata=self._metadata):
                kind = service_pb2.EventType.Name(ev.type).removeprefix("EVENT_TYPE_").lower()
                yield kind, Experiment.from_proto(ev.experiment)
        except grpc.RpcError as e:
            raise FaultlineError(e.code(), e.details() or "", "Watch") from None

    def capabilities(self) -> Capabilities:
        r = self._call("Capabilities", service_pb2.CapabilitiesRequest())
        return Capabilities(
            agent_version=r.agent_version,
            kernel_release=r.kernel_release,
            cgroup2_mount=r.cgroup2_mount,
            btf=r.btf,
            probes={p.name: p.supported for p in r.probes},
            faults={
                f.fault: FaultSupport(f.fault, f.supported, f.backend, f.reason) for f in r.faults
            },
        )
