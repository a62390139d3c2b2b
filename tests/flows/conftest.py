"""A real Dask cluster for the flow tests (the Prefect harness lives in tests/conftest.py)."""

import pytest


@pytest.fixture(scope="session")
def dask_cluster(prefect_harness):
    """A real Dask LocalCluster with 2 worker processes."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    client = Client(cluster)
    yield cluster, client
    client.close()
    cluster.close()
