"""Fixtures of the end-to-end tests: a backend run by twistd, driven with ``li``."""

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

# private Prosody and ejabberd (pytest_plugins is only allowed at the root)
from tests.servers.fixtures import (  # noqa: F401
    ejabberd_server,
    prosody_server,
    xmpp_server_pool,
)
from tests.support import BackendProcess, venv_script


@pytest.fixture
def e2e_dir():
    # short: a UNIX socket path must fit in ~100 bytes
    with tempfile.TemporaryDirectory(prefix="lb-e2e-") as folder:
        yield Path(folder)


@pytest.fixture
def e2e_config(e2e_dir):
    config = e2e_dir / "libervia.conf"
    config.write_text(
        f"[DEFAULT]\nlocal_dir = {e2e_dir / 'local'}\n"
        f"[bridge]\nsocket = {e2e_dir / 'run' / 'bridge.sock'}\n"
    )
    return config


@pytest.fixture
def e2e_env(e2e_dir):
    env = dict(os.environ)
    # keep the user's own configuration and backend out of the test
    env["XDG_CONFIG_HOME"] = str(e2e_dir / "xdg-config")
    for name in ("LIBERVIA_CONFIG", "LIBERVIA_BRIDGE_SOCKET", "XDG_RUNTIME_DIR"):
        env.pop(name, None)
    return env


@pytest.fixture
def backend_process(e2e_config, e2e_env, e2e_dir):
    """``twistd --nodaemon --pidfile= libervia-backend`` with the test configuration.

    Yields once the bridge listens; stops the backend with SIGTERM at the end if the
    test did not.
    """
    process = BackendProcess(
        [venv_script("twistd"), "--nodaemon", "--pidfile=", "libervia-backend",
         "--config", str(e2e_config)],
        env=e2e_env, cwd=e2e_dir,
    )
    try:
        process.wait_for("backend ready", timeout=60)
        yield process
    finally:
        process.stop()


class Li:
    """Runs the installed ``li`` script as a user would, with the test configuration."""

    def __init__(self, config: Path, env: dict) -> None:
        self.script = venv_script("li")
        # li finds the socket the way the backend does: through the same config file
        self.env = {**env, "LIBERVIA_CONFIG": str(config)}

    def __call__(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.script, *args], env=self.env, capture_output=True, text=True, timeout=60,
            input=input,
        )

    def json(self, *args: str, input: str | None = None):
        result = self(*args, "--output", "json", input=input)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def li(e2e_config, e2e_env):
    return Li(e2e_config, e2e_env)
