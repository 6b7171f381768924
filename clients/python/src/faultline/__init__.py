"""faultline: a typed client of the faultline agent (proto/faultline/v1).

from faultline import Client, Target, faults

with Client("unix:///run/faultline/faultline.sock") as agent:
    e = agent.inject(Target.cgroup("/shop/web"),
                     faults.NetPartition(faults.PacketFilter(remote_ports=[6379])),
                     duration="60s", labels={"run": "redis-down"})
    print(e.state, e.counters["packets_dropped"])
    agent.cancel_by_label({"run": "redis-down"})
"""

from faultline import faults
from faultline.client import (
    DEFAULT_ENDPOINT,
    Capabilities,
    Client,
    Experiment,
    FaultlineError,
    FaultSupport,
)
from faultline.faults import FAMILIES, Fault, PacketFilter, Target

__all__ = [
    "DEFAULT_ENDPOINT",
    "FAMILIES",
    "Capabilities",
    "Client",
    "Experiment",
    "Fault",
    "FaultSupport",
    "FaultlineError",
    "PacketFilter",
    "Target",
    "faults",
]
__version__ = "0.1.0"
