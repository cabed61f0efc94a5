"""Helpers shared by the test suites."""

import os
from collections.abc import Callable

import pytest


def in_ci() -> bool:
    """True when running under CI (``CI=true``), where nothing may be skipped silently."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """A test needs something missing here: skip locally, fail under CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing server is a failure, not a skip)")
    pytest.skip(reason)


def venv_script(name: str) -> str:
    """Path of a console script installed beside the running interpreter."""
    import shutil
    import sys
    from pathlib import Path

    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed beside {sys.executable}")
    return found


def _default_sigint() -> None:
    """Give the child the default SIGINT handling, as a terminal's Ctrl-C would find it.

    A test suite started in the background by a non-interactive shell has SIGINT
    ignored, and its children inherit that (Twisted then leaves SIGINT alone): the tests
    of what Ctrl-C does must not depend on how the suite was started.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _sigint_reset() -> Callable[[], None] | None:
    """:func:`_default_sigint` where the child would inherit an ignored SIGINT, else
    None (a handler of this process is reset by the child's exec anyway).

    A ``preexec_fn`` makes ``subprocess`` fork this whole process instead of using
    ``vfork``: copying the page tables of a large process (a benchmark run holding
    backends with big nodes) costs tens of milliseconds per child, which P7 measured
    as start-up time.
    """
    import signal

    return _default_sigint if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else None


def backend_env(folder) -> dict[str, str]:
    """The environment of a backend process under test: the user's own configuration
    (and any backend already running for them) kept out, ``folder`` standing for it."""
    env = dict(os.environ)
    env["XDG_CONFIG_HOME"] = str(folder / "xdg-config")
    for name in ("LIBERVIA_CONFIG", "LIBERVIA_BRIDGE_SOCKET", "XDG_RUNTIME_DIR"):
        env.pop(name, None)
    return env


def write_config(path, sections: dict) -> None:
    """Write a configuration file: ``{section: {option: value}}``."""
    path.write_text("".join(
        f"[{section}]\n" + "".join(f"{key} = {value}\n" for key, value in values.items())
        for section, values in sections.items()))


class BackendProcess:
    """A backend run as a child process, its output collected line by line."""

    def __init__(self, args, env=None, cwd=None):
        import queue
        import subprocess
        import threading

        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=env, cwd=cwd, preexec_fn=_sigint_reset(),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 60) -> str:
        """Wait until a line containing ``text`` is printed; return that line."""
        import queue
        import time

        deadline = time.monotonic() + timeout
        for line in self.lines:
            if text in line:
                return line
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{text!r} not printed within {timeout}s; output:\n" + "".join(self.lines)
                )
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"process ended before printing {text!r}; output:\n" + "".join(self.lines)
                )
            self.lines.append(line)
            if text in line:
                return line

    def stop(self, sig=None, timeout: float = 30) -> int:
        """Send ``sig`` (SIGTERM by default), wait for the exit, return its status.

        A process still running after ``timeout`` is killed, and the time-out raised.
        """
        import signal
        import subprocess

        if self.process.poll() is None:
            self.process.send_signal(sig or signal.SIGTERM)
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # the test fails, but leaves no backend running behind it
            self.process.kill()
            self.process.wait()
            raise
        self._reader.join(timeout=5)
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.lines.append(line)
        return status

    @property
    def output(self) -> str:
        return "".join(self.lines)
