"""A backend run as a separate process, as users run it (P7, P8).

:class:`ProcessSetup` writes a configuration into a folder of its own (data folder,
bridge socket) and starts the ``libervia-backend`` launcher on it, with an environment
that keeps the user's own configuration and backend out. Its methods block: call them
from a thread (``threads.deferToThread``) while the reactor runs.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from libervia.cli.bridge_client import BridgeClient
from tests.support import BackendProcess, backend_env, venv_script, write_config

#: the line the backend logs once migrated, plugins loaded and the bridge listening
READY_LINE = "backend ready"

#: seconds a start-up may take on a loaded machine
START_TIMEOUT = 120
#: seconds a backend may take to stop
STOP_TIMEOUT = 60


def read_vm_hwm(pid: int) -> int:
    """Peak resident memory of process ``pid`` (``VmHWM``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            value, unit = line.split()[1:3]
            assert unit == "kB", line
            return int(value) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


@dataclass
class ProcessSetup:
    """Configuration of a backend process living in ``folder``.

    :param database: the SQLite file to use (default: ``libervia.db`` in the data
        folder, created and migrated at start-up)
    :param bytecode: let the backend write its modules' compiled form (the test
        environment forbids it), as an installed backend has it
    """

    folder: Path
    database: Path | None = None
    bytecode: bool = False

    def __post_init__(self) -> None:
        self.local_dir = self.folder / "local"
        # short: a UNIX socket path must fit in about 100 bytes
        self.socket = self.folder / "bridge.sock"
        self.config = self.folder / "libervia.conf"
        sections: dict[str, dict] = {"DEFAULT": {"local_dir": self.local_dir},
                                     "bridge": {"socket": self.socket}}
        if self.database is not None:
            sections["storage"] = {"url": f"sqlite:///{self.database}"}
        write_config(self.config, sections)

    def env(self) -> dict[str, str]:
        env = backend_env(self.folder)
        if self.bytecode:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def command(self) -> list[str]:
        return [venv_script("libervia-backend"), "--config", str(self.config)]

    def start(self) -> BackendProcess:
        """Start the backend (without waiting for it to be ready)."""
        return BackendProcess(self.command(), env=self.env(), cwd=self.folder)

    def start_ready(self) -> BackendProcess:
        """Start the backend and wait until it says it is ready."""
        process = self.start()
        try:
            process.wait_for(READY_LINE, timeout=START_TIMEOUT)
        except BaseException:
            kill(process)
            raise
        return process

    def bridge(self, timeout: float = 120) -> BridgeClient:
        """A client of the backend's bridge (connected on first call)."""
        return BridgeClient(self.socket, timeout=timeout)


def stop(process: BackendProcess) -> None:
    """Stop a backend cleanly (as a service manager does); raise if it did not.

    SIGTERM, not SIGINT: a program started in the background by a non-interactive
    shell ignores SIGINT, and so do its children (Twisted leaves an ignored SIGINT
    alone). A backend still running after :data:`STOP_TIMEOUT` seconds is killed,
    never left behind.
    """
    try:
        status = process.stop(signal.SIGTERM, timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        # BackendProcess.stop killed it
        raise RuntimeError(
            f"the backend did not stop within {STOP_TIMEOUT} s of SIGTERM (killed); "
            f"its last lines:\n{process.output[-4000:]}") from None
    if status != 0:
        raise RuntimeError(f"the backend exited with status {status}:\n{process.output}")


def kill(process: BackendProcess) -> None:
    """Kill a backend at once (after a failure: the failure is what matters)."""
    process.stop(signal.SIGKILL, timeout=STOP_TIMEOUT)


def python_command(code: str) -> list[str]:
    """``python -c code`` with the interpreter running the benchmarks (the venv's)."""
    return [sys.executable, "-c", code]

