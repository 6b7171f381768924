"""Chaos Toolkit extension for faultline: inject, probe and cancel faults on a node's agent.

Modules, as Chaos Toolkit's python provider names them:

- chaosfaultline.actions: inject_<family> for every fault family, inject (any Fault as
  proto JSON), cancel, cancel_by_label;
- chaosfaultline.probes: get_experiment, experiment_state, experiment_counters,
  list_experiments, counters_by_label, count_by_label, capabilities, fault_supported;
- chaosfaultline.rollbacks: cancel_by_label, cancel.

`chaos discover chaosfaultline` lists them with their arguments.
"""

from typing import Any, List

__version__ = "0.1.0"
__all__ = ["discover", "load_exported_activities"]


def discover(discover_system: bool = True) -> Any:
    """What `chaos discover` reports about this extension."""
    from chaoslib.discovery.discover import initialize_discovery_result

    discovery = initialize_discovery_result("chaosfaultline", __version__, "faultline")
    discovery["activities"].extend(load_exported_activities())
    return discovery


def load_exported_activities() -> List[Any]:
    from chaoslib.discovery.discover import discover_actions, discover_probes

    activities: List[Any] = []
    activities.extend(discover_actions("chaosfaultline.actions"))
    activities.extend(discover_probes("chaosfaultline.probes"))
    activities.extend(discover_actions("chaosfaultline.rollbacks"))
    return activities
