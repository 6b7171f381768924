#!/usr/bin/env python3
"""The Python client's drill control against a real agent: a dry run, a stop condition that
ends an experiment as aborted, and halt / resume through the Chaos Toolkit actions.

    drill_control.py ENDPOINT CGROUP SLEEPER_PID

Prints one JSON object with what each step saw.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from chaosfaultline import actions
from faultline import Client, FaultlineError


def main() -> int:
    endpoint, cgroup, sleeper = sys.argv[1], sys.argv[2], int(sys.argv[3])
    out: dict = {}
    loss = {"net_loss": {"percent": 100, "filter": {"protocol": "PROTOCOL_UDP", "remote_ports": [{"first": 9}]}}}
    with Client(endpoint) as c:
        plan = c.plan(cgroup, loss, "60s")
        out["plan_backend"] = plan.get("backend")
        out["plan_steps"] = len(plan.get("steps", []))
        out["after_plan"] = len(c.list())
        e = c.inject(cgroup, loss, "60s", {"py": "drill"}, stop_conditions=[{"no_processes": {}}])
        out["stop_conditions"] = e.stop_conditions
        os.kill(sleeper, signal.SIGKILL)
        for _ in range(100):
            e = c.get(e.id)
            if e.ended:
                break
            time.sleep(0.05)
        out["state"] = e.state
        out["abort"] = e.abort
    configuration = {"faultline_endpoint": endpoint}
    second = actions.inject(cgroup, loss, "60s", configuration=configuration)
    ended = actions.halt("python drill", configuration=configuration)
    out["halted"] = [x["id"] for x in ended] == [second["id"]]
    try:
        actions.inject(cgroup, loss, "60s", configuration=configuration)
        out["refused_while_halted"] = None
    except FaultlineError as err:
        out["refused_while_halted"] = err.code_name
    out["resumed"] = actions.resume(configuration=configuration)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
