"""Shared fixtures. Media from ../shared/data is read in place; tests that need it skip only when
that folder does not exist on the machine (it does on CI)."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.s3server"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SESSION_GPUS = 2


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not on this machine")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint):
    """The local Ray cluster, started once for the whole test session with this machine's cores and
    two fake GPUs (for the simulated backend; the other backends in tests hold none). Its workers
    inherit the environment at start, so the S3 test server's credentials are set first."""
    import ray

    from farm.runtime.cluster import connect

    connect(num_cpus=2, num_gpus=SESSION_GPUS)
    yield
    ray.shutdown()
