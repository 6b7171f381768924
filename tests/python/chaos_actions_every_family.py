#!/usr/bin/env python3
"""Calls chaosfaultline.actions.inject_<family> for every fault family against a real agent,
the way Chaos Toolkit's python provider calls it (configuration mapping, proto JSON out),
then the rollback cancel_by_label; one at a time, so that no two faults share the target.

    chaos_actions_every_family.py ENDPOINT CGROUP LABEL

Prints one JSON object: {"families": [{"family", "action", "state", "id", "cancelled",
"error"}...], "supported": {family: bool}}.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from chaosfaultline import actions, probes, rollbacks
from faultline import FAMILIES, FaultlineError

UDP9: dict[str, Any] = {"protocol": "udp", "ports": [9]}

# The action for each family with arguments that touch nothing outside the target: UDP to
# the discard port, a name that does not exist, a signal that does nothing, small sizes.
CALLS: dict[str, tuple[Any, dict[str, Any]]] = {
    "net_loss": (actions.inject_net_loss, {"percent": 10, **UDP9}),
    "net_delay": (actions.inject_net_delay, {"latency": "10ms", **UDP9}),
    "net_bandwidth": (actions.inject_net_bandwidth, {"rate_bps": 1_000_000, **UDP9}),
    "net_reject": (actions.inject_net_reject, {"protocol": "tcp", "ports": [9]}),
    "net_partition": (actions.inject_net_blackhole, UDP9),
    "net_corrupt": (actions.inject_net_corrupt, {"percent": 1, **UDP9}),
    "net_duplicate": (actions.inject_net_duplicate, {"percent": 1, **UDP9}),
    "net_dns": (actions.inject_net_dns, {"names": ["nothing.invalid"], "answer": "servfail"}),
    "syscall_errno": (actions.inject_syscall_errno, {"syscalls": ["connect"], "errno": "EIO"}),
    "syscall_delay": (actions.inject_syscall_delay, {"syscalls": ["mkdir"], "latency": "10ms"}),
    "cpu_stress": (actions.inject_cpu_stress, {"load_percent": 5, "workers": 1}),
    "memory_stress": (actions.inject_memory_stress, {"bytes": 4 << 20}),
    "io_stress": (actions.inject_io_stress, {"bytes": 4 << 20, "mode": "write"}),
    "disk_fill": (actions.inject_disk_fill, {"path": "/tmp", "bytes": 1 << 20}),
    "process_kill": (actions.inject_process_kill, {"signal": "SIGCONT"}),
    "process_pause": (actions.inject_process_pause, {}),
    "time_skew": (actions.inject_time_skew, {"offset": "-600s"}),
}


def main() -> int:
    endpoint, cgroup, label = sys.argv[1:4]
    configuration = {"faultline_endpoint": endpoint}
    assert set(CALLS) == set(FAMILIES), set(CALLS) ^ set(FAMILIES)
    caps = probes.capabilities(configuration=configuration)
    supported = {f: bool(s["supported"]) for f, s in caps["faults"].items()}
    results = []
    for family, (action, args) in CALLS.items():
        labels = {"run": label, "family": family}
        r: dict[str, Any] = {"family": family, "action": action.__name__}
        try:
            e = action(cgroup, duration="60s", labels=labels, configuration=configuration, **args)
            r.update(state=e["state"], id=e["id"], fault_kind=e["fault_kind"])
        except FaultlineError as err:
            r["error"] = err.code_name
            r["message"] = err.message
        cancelled = rollbacks.cancel_by_label(labels, configuration=configuration)
        r["cancelled"] = [c["state"] for c in cancelled]
        results.append(r)
    left = probes.count_by_label({"run": label}, ["pending", "active"], configuration=configuration)
    print(json.dumps({"families": results, "supported": supported, "left_active": left}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
