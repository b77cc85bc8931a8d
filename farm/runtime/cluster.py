"""Connect to Ray: the embedded local cluster by default, a running cluster when an address is set."""
from __future__ import annotations

import logging
import os

from farm.errors import FarmError


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start (or join) Ray once per process.

    address: a cluster to join ("auto", "ray://host:10001", …); None also honours RAY_ADDRESS, and
    with neither a local cluster sized to this machine (or to `num_cpus`) is started. The local
    cluster runs without token auth, dashboard or usage reporting: it serves this process only.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(
                num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local cluster"
        raise FarmError(f"ray {where}", f"cannot start or join: {exc}", "check runtime.address / RAY_ADDRESS") from None

