"""Chaos Toolkit actions: inject every faultline fault family, and cancel.

Every inject_* action takes the target (a cgroup path such as "/shop/web", or the proto JSON
of a Target: {"pid": 42}, {"container_id": "3f2a"}, {"pod": {"uid": "..."}},
{"interface": {"name": "eth0"}}, {"host": true}), the duration ("60s", "5m" or seconds),
labels (give every experiment of a run a label, so a rollback can cancel by it), and the
fault's own fields as in proto/faultline/v1/fault.proto. Network faults also take the packet
filter: protocol ("tcp", "udp", "icmp"), ports ([6379, "8000-8100"]), cidrs, exclude and
direction ("ingress", "egress", "both"). They return the experiment as a mapping (id, state,
counters, ...), which the journal keeps.

The agent comes from the activity's secrets or the experiment's configuration
(faultline_endpoint and, for https, faultline_ca_cert / faultline_client_cert /
faultline_client_key / faultline_token): see chaosfaultline._agent.
"""

from typing import Any, Dict, List, Optional, Union

from chaosfaultline._agent import client
from faultline import faults
from faultline.faults import PacketFilter

__all__ = [
    "halt",
    "resume",
    "inject",
    "inject_net_loss",
    "inject_net_delay",
    "inject_net_bandwidth",
    "inject_net_reject",
    "inject_net_partition",
    "inject_net_blackhole",
    "inject_net_corrupt",
    "inject_net_duplicate",
    "inject_net_dns",
    "inject_syscall_errno",
    "inject_syscall_delay",
    "inject_cpu_stress",
    "inject_memory_stress",
    "inject_io_stress",
    "inject_disk_fill",
    "inject_process_kill",
    "inject_process_pause",
    "inject_time_skew",
    "cancel",
    "cancel_by_label",
]

Target = Union[str, Dict[str, Any]]
Ports = Optional[List[Union[int, str]]]


def _packet_filter(
    protocol: Optional[str],
    ports: Ports,
    cidrs: Optional[List[str]],
    exclude: Optional[List[str]],
    direction: Optional[str],
) -> PacketFilter:
    return PacketFilter(
        direction=direction,
        protocol=protocol,
        remote_cidrs=list(cidrs or []),
        exclude_cidrs=list(exclude or []),
        remote_ports=list(ports or []),
    )


def _run(
    fault: Union[faults.Fault, Dict[str, Any]],
    target: Target,
    duration: Union[str, float],
    labels: Optional[Dict[str, str]],
    configuration: Optional[Dict[str, Any]],
    secrets: Optional[Dict[str, Any]],
    stop_conditions: Optional[List[Dict[str, Any]]] = None,
) -> Dict[str, Any]:
    with client(configuration, secrets) as agent:
        e = agent.inject(target, fault, duration, labels, stop_conditions=stop_conditions or ())
        return e.to_dict()


def inject(
    target: Target,
    fault: Dict[str, Any],
    duration: Union[str, float] = "60s",
    labels: Optional[Dict[str, str]] = None,
    stop_conditions: Optional[List[Dict[str, Any]]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Any fault, given as the proto JSON of a Fault: {"net_loss": {"percent": 10}}, with
    stop conditions the agent watches as the proto JSON of StopCondition ({"oom_kill": {}},
    {"http": {"url": "http://127.0.0.1:8080/healthz", "failures": 3}}, ...): the first that
    holds ends it as "aborted"."""
    return _run(fault, target, duration, labels, configuration, secrets, stop_conditions)


def halt(
    reason: str = "",
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> List[Dict[str, Any]]:
    """The agent's emergency stop: every experiment ends and new ones are refused until
    resume; returns the experiments it ended."""
    with client(configuration, secrets) as agent:
        return [e.to_dict() for e in agent.halt(reason)]


def resume(
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> bool:
    """Lifts a halt; whether the agent was halted."""
    with client(configuration, secrets) as agent:
        return agent.resume()


def inject_net_loss(
    target: Target,
    percent: Optional[float] = None,
    duration: Union[str, float] = "60s",
    burst_length: Optional[float] = None,
    every_nth: Optional[int] = None,
    seed: Optional[int] = None,
    protocol: Optional[str] = None,
    ports: Ports = None,
    cidrs: Optional[List[str]] = None,
    exclude: Optional[List[str]] = None,
    direction: Optional[str] = None,
    labels: Optional[Dict[str, str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Drop a percentage of the target's matching packets (or in bursts, or every Nth)."""
    f = faults.NetLoss(
        percent=percent,
        burst_length=burst_length,
        every_nth=every_nth,
        seed=seed,
        filter=_packet_filter(protocol, ports, cidrs, exclude, direction),
    )
    return _run(f, target, duration, labels, configuration, secrets)


def inject_net_delay(
    target: Target,
    latency: Union[str, float],
    duration: Union[str, float] = "60s",
    jitter: Optional[Union[str, float]] = None,
    correlation: Optional[float] = None,
    distribution: Optional[str] = None,
    percent: Optional[float] = None,
    seed: Optional[int] = None,
    devices: Optional[List[str]] = None,
    protocol: Optional[str] = None,
    ports: Ports = None,
    cidrs: Optional[List[str]] = None,
    exclude: Optional[List[str]] = None,
    direction: Optional[str] = None,
    labels: Optional[Dict[str, str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Hold the target's matching packets for a latency (with optional jitter)."""
    f = faults.NetDelay(
        latency=latency,
        jitter=jitter,
        correlation=correlation,
        distribution=distribution,
        percent=percent,
        seed=seed,
        devices=list(devices or []),
        filter=_packet_filter(protocol, ports, cidrs, exclude, direction),
    )
    return _run(f, target, duration, labels, configuration, secrets)


def inject_net_bandwidth(
    target: Target,
    rate_bps: int,
    duration: Union[str, float] = "60s",
    burst_bytes: Optional[int] = None,
    devices: Optional[List[str]] = None,
    protocol: Optional[str] = None,
    ports: Ports = None,
    cidrs: Optional[List[str]] = None,
    exclude: Optional[List[str]] = None,
    direction: Optional[str] = None,
    labels: Optional[Dict[str, str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Cap the target's matching traffic to rate_bps bits per second."""
    f = faults.NetBandwidth(
        rate_bps=rate_bps,
        burst_bytes=burst_bytes,
        devices=list(devices or []),
        filter=_packet_filter(protocol, ports, cidrs, exclude, direction),
    )
    return _run(f, target, duration, labels, configuration, secrets)


def inject_net_reject(
    target: Target,
    duration: Union[str, float] = "60s",
    errno: Optional[str] = None,
    percent: Optional[float] = None,
    protocol: Optional[str] = None,
    ports: Ports = None,
    cidrs: Optional[List[str]] = None,
    exclude: Optional[List[str]] = None,
    labels: Optional[Dict[str, str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Make the target's connect() to matching peers fail at once (ECONNREFUSED)."""
    f = faults.NetReject(
        errno=errno,
        percent=percent,
        filter=_packet_filter(protocol, ports, cidrs, exclude, None),
    )
    return _run(f, target, duration, labels, configuration, secrets)


def inject_net_partition(
    target: Target,
    duration: Union[str, float] = "60s",
    protocol: Optional[str] = None,
    ports: Ports = None,
    cidrs: Optional[List[str]] = None,
    exclude: Optional[List[str]] = None,
    labels: Optional[Dict[str, str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Drop everything between the target and matching peers, both ways (a blackhole)."""
    f = faults.NetPartition(filter=_packet_filter(protocol, ports, cidrs, exclude, None))
    return _run(f, target, duration, labels, configuration, secrets)


def inject_net_blackhole(
    target: Target,
    duration: Union[str, float] = "60s",
    protocol: Optional[str] = None,
    ports: Ports = None,
    cidrs: Optional[List[str]] = None,
    exclude: Optional[List[str]] = None,
    labels: Optional[Dict[str, str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """inject_net_partition under the name most chaos tools use."""
    return inject_net_partition(
        target, duration, protocol, ports, cidrs, exclude, labels, configuration, secrets
    )


def inject_net_corrupt(
    target: Target,
    percent: float,
    duration: Union[str, float] = "60s",
    seed: Optional[int] = None,
    devices: Optional[List[str]] = None,
    protocol: Optional[str] = None,
    ports: Ports = None,
    cidrs: Optional[List[str]] = None,
    exclude: Optional[List[str]] = None,
    direction: Optional[str] = None,
    labels: Optional[Dict[str, str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Flip one random bit in a percentage of matching packets."""
    f = faults.NetCorrupt(
        percent=percent,
        seed=seed,
        devices=list(devices or []),
        filter=_packet_filter(protocol, ports, cidrs, exclude, direction),
    )
    return _run(f, target, duration, labels, configuration, secrets)


def inject_net_duplicate(
    target: Target,
    percent: float,
    duration: Union[str, float] = "60s",
    devices: Optional[List[str]] = None,
    protocol: Optional[str] = None,
    ports: Ports = None,
    cidrs: Optional[List[str]] = None,
    exclude: Optional[List[str]] = None,
    direction: Optional[str] = None,
    labels: Optional[Dict[str, str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Send a percentage of matching packets twice."""
    f = faults.NetDuplicate(
        percent=percent,
        devices=list(devices or []),
        filter=_packet_filter(protocol, ports, cidrs, exclude, direction),
    )
    return _run(f, target, duration, labels, configuration, secrets)


def inject_net_dns(
    target: Target,
    names: List[str],
    duration: Union[str, float] = "60s",
    answer: Optional[str] = None,
    percent: Optional[float] = None,
    cidrs: Optional[List[str]] = None,
    ports: Ports = None,
    labels: Optional[Dict[str, str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Fail the target's DNS lookups of these names: "nxdomain" (default), "servfail", "drop"."""
    f = faults.NetDns(
        names=list(names),
        answer=answer,
        percent=percent,
        filter=_packet_filter(None, ports, cidrs, None, None),
    )
    return _run(f, target, duration, labels, configuration, secrets)


def inject_syscall_errno(
    target: Target,
    syscalls: List[str],
    duration: Union[str, float] = "60s",
    errno: Optional[str] = None,
    percent: Optional[float] = None,
    every_nth: Optional[int] = None,
    max_hits: Optional[int] = None,
    path_prefix: Optional[str] = None,
    follow_children: bool = False,
    seed: Optional[int] = None,
    labels: Optional[Dict[str, str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Fail the target's chosen system calls with an errno (EIO by default)."""
    f = faults.SyscallErrno(
        syscalls=list(syscalls),
        errno=errno,
        percent=percent,
        every_nth=every_nth,
        max_hits=max_hits,
        path_prefix=path_prefix,
        follow_children=follow_children,
        seed=seed,
    )
    return _run(f, target, duration, labels, configuration, secrets)


def inject_syscall_delay(
    target: Target,
    syscalls: List[str],
    latency: Union[str, float],
    duration: Union[str, float] = "60s",
    jitter: Optional[Union[str, float]] = None,
    distribution: Optional[str] = None,
    percent: Optional[float] = None,
    every_nth: Optional[int] = None,
    max_hits: Optional[int] = None,
    follow_children: bool = False,
    seed: Optional[int] = None,
    labels: Optional[Dict[str, str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Make the target's chosen system calls return `latency` later."""
    f = faults.SyscallDelay(
        syscalls=list(syscalls),
        latency=latency,
        jitter=jitter,
        distribution=distribution,
        percent=percent,
        every_nth=every_nth,
        max_hits=max_hits,
        follow_children=follow_children,
        seed=seed,
    )
    return _run(f, target, duration, labels, configuration, secrets)


def inject_cpu_stress(
    target: Target,
    load_percent: int = 100,
    duration: Union[str, float] = "60s",
    workers: Optional[int] = None,
    labels: Optional[Dict[str, str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Busy workers inside the target cgroup at load_percent per worker."""
    f = faults.CpuStress(load_percent=load_percent, workers=workers)
    return _run(f, target, duration, labels, configuration, secrets)


def inject_memory_stress(
    target: Target,
    duration: Union[str, float] = "60s",
    bytes: Optional[int] = None,
    percent: Optional[float] = None,
    workers: Optional[int] = None,
    ramp: Optional[Union[str, float]] = None,
    oom_score_adj: Optional[int] = None,
    labels: Optional[Dict[str, str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Resident memory held inside the target cgroup: bytes, or percent of its limit."""
    f = faults.MemoryStress(
        bytes=bytes, percent=percent, workers=workers, ramp=ramp, oom_score_adj=oom_score_adj
    )
    return _run(f, target, duration, labels, configuration, secrets)


def inject_io_stress(
    target: Target,
    duration: Union[str, float] = "60s",
    mode: Optional[str] = None,
    workers: Optional[int] = None,
    block_size: Optional[int] = None,
    direct: bool = False,
    directory: Optional[str] = None,
    bytes: Optional[int] = None,
    rate_bytes_per_second: Optional[int] = None,
    labels: Optional[Dict[str, str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Disk IO by workers inside the target cgroup: "write" (default), "read", "mixed"."""
    f = faults.IoStress(
        mode=mode,
        workers=workers,
        block_size=block_size,
        direct=direct,
        directory=directory,
        bytes=bytes,
        rate_bytes_per_second=rate_bytes_per_second,
    )
    return _run(f, target, duration, labels, configuration, secrets)


def inject_disk_fill(
    target: Target,
    path: str,
    duration: Union[str, float] = "60s",
    bytes: Optional[int] = None,
    percent: Optional[float] = None,
    labels: Optional[Dict[str, str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Take space on the filesystem holding `path`: bytes, or up to percent used."""
    f = faults.DiskFill(path=path, bytes=bytes, percent=percent)
    return _run(f, target, duration, labels, configuration, secrets)


def inject_process_kill(
    target: Target,
    duration: Union[str, float] = "60s",
    signal: Optional[str] = None,
    mode: Optional[str] = None,
    interval: Optional[Union[str, float]] = None,
    labels: Optional[Dict[str, str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Signal the target's processes ("all" or "random_one"), once or every interval."""
    f = faults.ProcessKill(signal=signal, mode=mode, interval=interval)
    return _run(f, target, duration, labels, configuration, secrets)


def inject_process_pause(
    target: Target,
    duration: Union[str, float] = "60s",
    labels: Optional[Dict[str, str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Freeze every process of the target for the duration."""
    return _run(faults.ProcessPause(), target, duration, labels, configuration, secrets)


def inject_time_skew(
    target: Target,
    offset: Union[str, float],
    duration: Union[str, float] = "60s",
    clocks: Optional[List[str]] = None,
    follow_children: bool = False,
    labels: Optional[Dict[str, str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Shift the realtime clock of the target's processes by offset ("-10m", 3600)."""
    f = faults.TimeSkew(offset=offset, clocks=list(clocks or []), follow_children=follow_children)
    return _run(f, target, duration, labels, configuration, secrets)


def cancel(
    experiment_id: str,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """End one experiment now; one that already ended comes back unchanged."""
    with client(configuration, secrets) as agent:
        return agent.cancel(experiment_id).to_dict()


def cancel_by_label(
    labels: Dict[str, str],
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> List[Dict[str, Any]]:
    """Cancel every pending or active experiment carrying all of these labels."""
    with client(configuration, secrets) as agent:
        return [e.to_dict() for e in agent.cancel_by_label(labels)]
