"""Connect to Ray: the embedded local cluster by default, a running cluster when an address is set."""
from __future__ import annotations

import logging
import os

from farm.errors import FarmError


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Start (or join) Ray once per process.

    address: a cluster to join ("auto", "ray://host:10001", …); None also honours RAY_ADDRESS, and
    with neither a new local cluster sized to this machine (or to `num_cpus` and `num_gpus`, which may
    be more than the machine has: fake GPUs for the simulated backend) is started. The local
    cluster runs without token auth, dashboard or usage reporting: it serves this process only, and
    every port it opens is bound to 127.0.0.1.
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
            _start_local(num_cpus or os.cpu_count(), num_gpus)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local cluster"
        raise FarmError(f"ray {where}", f"cannot start or join: {exc}", "check runtime.address / RAY_ADDRESS") from None


def _start_local(num_cpus: int, num_gpus: int | None = None) -> None:
    import ray
    from ray._private import ray_constants

    # Ray's GCS, raylet, workers and agents listen on every interface (or on the node's address)
    # unless the node's address is 127.0.0.1, and Ray makes it the machine's network address, even
    # when given 127.0.0.1, unless multi-node clusters are off (as on macOS and Windows). Off, every
    # port is bound to loopback. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 does the same, but only if set
    # before ray is imported.
    ray_constants.ENABLE_RAY_CLUSTER = False
    # "local": always a new cluster. Without it ray.init joins the cluster named in Ray's
    # ray_current_cluster file: a `ray start` cluster of someone else's, or one long dead after a crash.
    ray.init(
        address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, log_to_driver=False,
        logging_level=logging.WARNING,
    )
