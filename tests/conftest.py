"""Shared fixtures: a digits bundle made once per test session, servers on port 0."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped digits CNN partitioned at every split (about 5 s)."""
    from splitpoint.models import reference_model
    from splitpoint.partition import PartitionOptions, partition

    out = tmp_path_factory.mktemp("bundles") / "digits"
    partition(reference_model("digits-cnn"), PartitionOptions(output=out, edgetpu_compiler=None), progress=_quiet)
    return out


class _QuietProgress:
    def update(self, label: str, advance: int = 1) -> None:
        logging.getLogger("tests").debug("partition progress: %s", label)


def _quiet(total: int) -> _QuietProgress:
    return _QuietProgress()


@pytest.fixture
def cloud_server(digits_bundle: Path) -> Iterator[object]:
    """A real server on 127.0.0.1, port 0 (the port it bound is `.port`)."""
    from cloud_server.config import CloudConfig
    from cloud_server.server import CloudServer

    server = CloudServer(CloudConfig(bundle=str(digits_bundle), listen="127.0.0.1:0", grace_s=5.0, insecure=True)).start()
    try:
        yield server
    finally:
        server.stop()
