"""The fault families and targets as plain dataclasses.

Each fault turns into the `faultline.v1.Fault` message through its proto JSON form, so its
fields are named as in proto/faultline/v1/fault.proto (snake_case) and enums are given by
their short names ("egress", "tcp", "normal"). Durations are seconds (int or float), a
`datetime.timedelta`, or a string such as "250ms", "30s", "5m", "1h".
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, Union

Duration = Union[int, float, str, timedelta]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h)?\s*$")


def seconds(d: Duration) -> float:
    """A duration in seconds: 1.5, timedelta(seconds=1.5), "1500ms" and "1.5s" are equal."""
    if isinstance(d, timedelta):
        return d.total_seconds()
    if isinstance(d, (int, float)):
        return float(d)
    m = _DURATION.match(d)
    if not m:
        raise ValueError(f"not a duration: {d!r} (e.g. 30s, 250ms, 5m, 1h, or seconds)")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def duration_json(d: Duration) -> str:
    """The proto JSON form of a google.protobuf.Duration: "1.500s"."""
    s = seconds(d)
    return f"{s:.9f}".rstrip("0").rstrip(".") + "s"


def _enum(prefix: str, value: str | None) -> str | None:
    if value is None or value == "":
        return None
    v = value.upper().replace("-", "_")
    return v if v.startswith(prefix + "_") else f"{prefix}_{v}"


@dataclass
class PacketFilter:
    """Which packets a network fault applies to; empty fields match everything."""

    direction: str | None = None  # "ingress", "egress", "both"
    protocol: str | None = None  # "tcp", "udp", "icmp"
    remote_cidrs: list[str] = field(default_factory=list)
    exclude_cidrs: list[str] = field(default_factory=list)
    # Remote ports: 6379, "8000-8100", or (first, last).
    remote_ports: list[int | str | tuple[int, int]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if d := _enum("DIRECTION", self.direction):
            out["direction"] = d
        if proto := _enum("PROTOCOL", self.protocol):
            out["protocol"] = proto
        if self.remote_cidrs:
            out["remote_cidrs"] = list(self.remote_cidrs)
        if self.exclude_cidrs:
            out["exclude_cidrs"] = list(self.exclude_cidrs)
        ports = []
        for p in self.remote_ports:
            if isinstance(p, tuple):
                ports.append({"first": int(p[0]), "last": int(p[1])})
            elif isinstance(p, str) and "-" in p:
                first, last = p.split("-", 1)
                ports.append({"first": int(first), "last": int(last)})
            else:
                ports.append({"first": int(p)})
        if ports:
            out["remote_ports"] = ports
        return out

    @classmethod
    def of(cls, value: PacketFilter | dict[str, Any] | None) -> PacketFilter:
        if value is None:
            return cls()
        if isinstance(value, PacketFilter):
            return value
        return cls(**value)


@dataclass
class Fault:
    """Base of the fault families; `kind` is the Fault oneof field name."""

    kind: ClassVar[str] = ""

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None or v == [] or v == "" or v is False:
                continue
            if isinstance(v, PacketFilter):
                v = v.to_json()
                if not v:
                    continue
            elif f.metadata.get("duration"):
                v = duration_json(v)
            elif f.metadata.get("enum"):
                v = _enum(f.metadata["enum"], v)
            out[f.name] = v
        return out

    def to_json(self) -> dict[str, Any]:
        """The proto JSON of the `Fault` message: {"net_loss": {...}}."""
        return {self.kind: self.body()}


def _dur(default: Any = None) -> Any:
    return field(default=default, metadata={"duration": True})


def _en(prefix: str, default: str | None = None) -> Any:
    return field(default=default, metadata={"enum": prefix})


def _filter() -> Any:
    return field(default_factory=PacketFilter)


@dataclass
class NetLoss(Fault):
    kind: ClassVar[str] = "net_loss"
    percent: float | None = None
    filter: PacketFilter = _filter()
    burst_length: float | None = None
    every_nth: int | None = None
    seed: int | None = None


@dataclass
class NetDelay(Fault):
    kind: ClassVar[str] = "net_delay"
    latency: Duration | None = _dur()
    jitter: Duration | None = _dur()
    filter: PacketFilter = _filter()
    correlation: float | None = None
    distribution: str | None = _en("DISTRIBUTION")  # "uniform", "normal"
    percent: float | None = None
    seed: int | None = None
    devices: list[str] = field(default_factory=list)


@dataclass
class NetBandwidth(Fault):
    kind: ClassVar[str] = "net_bandwidth"
    rate_bps: int = 0
    filter: PacketFilter = _filter()
    burst_bytes: int | None = None
    devices: list[str] = field(default_factory=list)


@dataclass
class NetReject(Fault):
    kind: ClassVar[str] = "net_reject"
    filter: PacketFilter = _filter()
    errno: str | None = None  # "ECONNREFUSED" (default), "EHOSTUNREACH", ...
    percent: float | None = None


@dataclass
class NetPartition(Fault):
    """Drop everything to and from matching peers, both ways (`faultline net partition`)."""

    kind: ClassVar[str] = "net_partition"
    filter: PacketFilter = _filter()


NetBlackhole = NetPartition


@dataclass
class NetCorrupt(Fault):
    kind: ClassVar[str] = "net_corrupt"
    percent: float = 0.0
    filter: PacketFilter = _filter()
    seed: int | None = None
    devices: list[str] = field(default_factory=list)


@dataclass
class NetDuplicate(Fault):
    kind: ClassVar[str] = "net_duplicate"
    percent: float = 0.0
    filter: PacketFilter = _filter()
    devices: list[str] = field(default_factory=list)


@dataclass
class NetDns(Fault):
    kind: ClassVar[str] = "net_dns"
    names: list[str] = field(default_factory=list)
    answer: str | None = _en("DNS_ANSWER")  # "nxdomain", "servfail", "drop"
    percent: float | None = None
    filter: PacketFilter = _filter()


@dataclass
class SyscallErrno(Fault):
    kind: ClassVar[str] = "syscall_errno"
    syscalls: list[str] = field(default_factory=list)
    errno: str | None = None  # default EIO
    percent: float | None = None
    every_nth: int | None = None
    max_hits: int | None = None
    path_prefix: str | None = None
    follow_children: bool = False
    seed: int | None = None


@dataclass
class SyscallDelay(Fault):
    kind: ClassVar[str] = "syscall_delay"
    syscalls: list[str] = field(default_factory=list)
    latency: Duration | None = _dur()
    jitter: Duration | None = _dur()
    distribution: str | None = _en("DISTRIBUTION")
    percent: float | None = None
    every_nth: int | None = None
    max_hits: int | None = None
    path_prefix: str | None = None
    follow_children: bool = False
    seed: int | None = None


@dataclass
class CpuStress(Fault):
    kind: ClassVar[str] = "cpu_stress"
    load_percent: int = 100
    workers: int | None = None


@dataclass
class MemoryStress(Fault):
    kind: ClassVar[str] = "memory_stress"
    bytes: int | None = None
    percent: float | None = None
    workers: int | None = None
    ramp: Duration | None = _dur()
    oom_score_adj: int | None = None


@dataclass
class IoStress(Fault):
    kind: ClassVar[str] = "io_stress"
    workers: int | None = None
    mode: str | None = _en("IO_MODE")  # "write", "read", "mixed"
    block_size: int | None = None
    direct: bool = False
    directory: str | None = None
    bytes: int | None = None
    rate_bytes_per_second: int | None = None


@dataclass
class DiskFill(Fault):
    kind: ClassVar[str] = "disk_fill"
    path: str = ""
    bytes: int | None = None
    percent: float | None = None


@dataclass
class ProcessKill(Fault):
    kind: ClassVar[str] = "process_kill"
    signal: str | None = None  # "SIGKILL" (default), "TERM", "9"
    mode: str | None = _en("KILL_MODE")  # "all", "random_one"
    interval: Duration | None = _dur()


@dataclass
class ProcessPause(Fault):
    kind: ClassVar[str] = "process_pause"


@dataclass
class TimeSkew(Fault):
    kind: ClassVar[str] = "time_skew"
    offset: Duration = _dur(0)
    clocks: list[str] = field(default_factory=list)
    follow_children: bool = False


#: Every fault family by its `Fault` oneof name.
FAMILIES: dict[str, type[Fault]] = {
    c.kind: c
    for c in (
        NetLoss,
        NetDelay,
        NetBandwidth,
        NetReject,
        NetPartition,
        NetCorrupt,
        NetDuplicate,
        NetDns,
        SyscallErrno,
        SyscallDelay,
        CpuStress,
        MemoryStress,
        IoStress,
        DiskFill,
        ProcessKill,
        ProcessPause,
        TimeSkew,
    )
}


@dataclass(frozen=True)
class Target:
    """What a fault applies to: build one with the class methods."""

    json: dict[str, Any]

    @classmethod
    def cgroup(cls, path: str) -> Target:
        """A cgroup v2 path, relative to the cgroup2 mount or a full path under it."""
        return cls({"cgroup_path": path})

    @classmethod
    def pid(cls, pid: int) -> Target:
        return cls({"pid": int(pid)})

    @classmethod
    def container(cls, container_id: str) -> Target:
        return cls({"container_id": container_id})

    @classmethod
    def pod(cls, pod: str, container_id: str = "", container_name: str = "") -> Target:
        """A pod: "NAMESPACE/NAME" as kubectl shows it (resolved on the node from the
        kubelet's /var/log/pods), or its uid; optionally one of its containers, by id
        (or unique prefix) or by its name in the pod spec."""
        if "/" in pod:
            namespace, name = pod.split("/", 1)
            spec: dict[str, str] = {"namespace": namespace, "name": name}
        else:
            spec = {"uid": pod}
        if container_id:
            spec["container_id"] = container_id
        if container_name:
            spec["container_name"] = container_name
        return cls({"pod": spec})

    @classmethod
    def interface(cls, name: str, netns: str = "") -> Target:
        dev = {"name": name} | ({"netns": netns} if netns else {})
        return cls({"interface": dev})

    @classmethod
    def host(cls) -> Target:
        return cls({"host": True})

    @classmethod
    def of(cls, value: Target | str | Mapping[str, Any]) -> Target:
        """A Target, a cgroup path ("/kubepods/pod1"), or the proto JSON of a Target
        ({"cgroup_path": ...}, {"pid": 42}, {"container_id": ...}, {"pod": {"uid": ...}}).
        """
        if isinstance(value, Target):
            return value
        if isinstance(value, str):
            return cls.cgroup(value)
        return cls(dict(value))
