"""Which agent an activity talks to, from the experiment's secrets and configuration."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from faultline import DEFAULT_ENDPOINT, Client

# Keys looked up in the activity's secrets first, then in the configuration.
KEYS = (
    "faultline_endpoint",
    "faultline_ca_cert",
    "faultline_client_cert",
    "faultline_client_key",
    "faultline_token",
    "faultline_token_file",
    "faultline_server_name",
    "faultline_timeout",
)


def settings(
    configuration: Mapping[str, Any] | None, secrets: Mapping[str, Any] | None
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key in KEYS:
        for source in (secrets or {}, configuration or {}):
            if source.get(key) not in (None, ""):
                found[key] = source[key]
                break
    return found


def client(
    configuration: Mapping[str, Any] | None = None, secrets: Mapping[str, Any] | None = None
) -> Client:
    """A Client for the agent the activity names.

    faultline_endpoint: unix:///PATH, a socket path, https://HOST:PORT or http://HOST:PORT
    (default: $FAULTLINE_ENDPOINT, else the local agent's socket). For https: faultline_ca_cert,
    faultline_client_cert, faultline_client_key (files), faultline_token or
    faultline_token_file, faultline_server_name (when the certificate names another host).
    Two agents in one experiment: give each its own secrets scope and name the scope in the
    provider's "secrets" list.
    """
    s = settings(configuration, secrets)
    token = s.get("faultline_token") or os.environ.get("FAULTLINE_TOKEN") or None
    if not token and s.get("faultline_token_file"):
        with open(s["faultline_token_file"], encoding="utf-8") as f:
            token = f.read().strip()
    return Client(
        str(
            s.get("faultline_endpoint") or os.environ.get("FAULTLINE_ENDPOINT") or DEFAULT_ENDPOINT
        ),
        ca_cert=s.get("faultline_ca_cert"),
        client_cert=s.get("faultline_client_cert"),
        client_key=s.get("faultline_client_key"),
        token=token,
        server_name=s.get("faultline_server_name"),
        timeout=float(s.get("faultline_timeout", 30.0)),
    )
