"""Chaos Toolkit probes: read experiments, their counters, and what the node supports."""

import dataclasses
from typing import Any, Dict, List, Optional

from chaosfaultline._agent import client

__all__ = [
    "get_experiment",
    "experiment_state",
    "experiment_counters",
    "list_experiments",
    "counters_by_label",
    "count_by_label",
    "capabilities",
    "fault_supported",
]


def get_experiment(
    experiment_id: str,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """One experiment: id, state, fault, target, labels, counters, times."""
    with client(configuration, secrets) as agent:
        return agent.get(experiment_id).to_dict()


def experiment_state(
    experiment_id: str,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> str:
    """ "pending", "active", "expired", "cancelled" or "failed"."""
    with client(configuration, secrets) as agent:
        return agent.get(experiment_id).state


def experiment_counters(
    experiment_id: str,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, int]:
    """What the kernel counted for one experiment: packets_dropped, calls_failed, ..."""
    with client(configuration, secrets) as agent:
        return agent.get(experiment_id).counters


def list_experiments(
    labels: Optional[Dict[str, str]] = None,
    states: Optional[List[str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> List[Dict[str, Any]]:
    """Experiments carrying all of `labels`, in any of `states` (none: every state)."""
    with client(configuration, secrets) as agent:
        return [e.to_dict() for e in agent.list(labels, states or ())]


def counters_by_label(
    labels: Dict[str, str],
    states: Optional[List[str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The counters of the experiments carrying `labels`, summed, with "experiments" (how
    many there are), "states" (how many in each state) and "ids"."""
    with client(configuration, secrets) as agent:
        found = agent.list(labels, states or ())
    total: Dict[str, Any] = {}
    states_seen: Dict[str, int] = {}
    for e in found:
        for k, v in e.counters.items():
            total[k] = total.get(k, 0) + v
        states_seen[e.state] = states_seen.get(e.state, 0) + 1
    total["experiments"] = len(found)
    total["states"] = states_seen
    total["ids"] = [e.id for e in found]
    return total


def count_by_label(
    labels: Dict[str, str],
    states: Optional[List[str]] = None,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> int:
    """How many experiments carry `labels` (in `states`, e.g. ["active"]); a tolerance of 0
    checks that nothing of a run is left active."""
    with client(configuration, secrets) as agent:
        return len(agent.list(labels, states or ()))


def capabilities(
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The node's kernel release, agent version, probes and supported faults."""
    with client(configuration, secrets) as agent:
        return dataclasses.asdict(agent.capabilities())


def fault_supported(
    fault: str,
    configuration: Optional[Dict[str, Any]] = None,
    secrets: Optional[Dict[str, Any]] = None,
) -> bool:
    """Whether the node can serve this fault family ("net_partition", "time_skew", ...)."""
    with client(configuration, secrets) as agent:
        return agent.capabilities().supports(fault)
