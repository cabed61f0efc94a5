"""Fixtures of the bridge tests: a real Backend on a fake clock, and in-memory clients."""

import pytest
from twisted.internet.testing import MemoryReactorClock

from libervia.backend.app.main import Backend
from libervia.backend.bridge.protocol import BridgeFactory
from libervia.backend.core.config import Config
from tests.unit.bridge.helpers import Client


@pytest.fixture
def backend(tmp_path):
    config = Config.from_dict(
        {"DEFAULT": {"local_dir": tmp_path / "local"},
         "bridge": {"socket": tmp_path / "run" / "bridge.sock"}},
        env={},
    )
    return Backend(config, reactor=MemoryReactorClock(), plugin_entry_points=[])


@pytest.fixture
def bridge(backend):
    return backend.bridge


@pytest.fixture
def factory(bridge):
    factory = BridgeFactory(bridge, max_frame_size=1024, max_buffer=4096, max_clients=8)
    bridge.factory = factory
    return factory


@pytest.fixture
def client(factory):
    return Client(factory)


@pytest.fixture
def make_client(factory):
    return lambda: Client(factory)
