"""The backend as users run it: twistd and the launcher, started and stopped."""

import os
import signal
import subprocess

import pytest

from tests.support import BackendProcess, venv_script


@pytest.fixture
def backend_config(tmp_path):
    local_dir = tmp_path / "local"
    config = tmp_path / "libervia.conf"
    config.write_text(
        f"[DEFAULT]\nlocal_dir = {local_dir}\n"
        f"[bridge]\nsocket = {tmp_path / 'bridge.sock'}\n"
    )
    return config


@pytest.fixture
def process_env(test_plugin_site, tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(test_plugin_site), env.get("PYTHONPATH")])
    )
    # keep the user's own configuration out of the test
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    env.pop("LIBERVIA_CONFIG", None)
    return env


def test_twistd_starts_logs_plugins_and_stops_cleanly_on_sigterm(
    backend_config, process_env, tmp_path
):
    backend = BackendProcess(
        [venv_script("twistd"), "--nodaemon", "--pidfile=", "libervia-backend",
         "--config", str(backend_config)],
        env=process_env, cwd=tmp_path,
    )
    try:
        backend.wait_for("backend ready")
    finally:
        status = backend.stop(signal.SIGTERM)
    output = backend.output
    # twistd handles SIGTERM, shuts down, then exits by the same signal (which service
    # managers count as a clean stop)
    assert status in (0, -signal.SIGTERM), output
    assert f"configuration read from {backend_config}" in output
    assert "XEP-0059 (Result Set Management) from libervia-backend" in output
    assert "TEST-PLUGIN (Test plugin) from libervia-test-plugin 0.3.1" in output
    # the third-party plugin's trigger saw the whole life cycle
    for status_name in ("ready", "stopping", "stopped"):
        assert f"test plugin saw backend status {status_name}" in output
    assert output.index("backend stopping") < output.index("backend stopped")
    assert "Server Shut Down" in output
    assert "Traceback" not in output


def test_launcher_runs_the_same_service(backend_config, process_env, tmp_path):
    backend = BackendProcess(
        [venv_script("libervia-backend"), "--config", str(backend_config),
         "--log-level", "debug"],
        env=process_env, cwd=tmp_path,
    )
    try:
        backend.wait_for("backend ready")
    finally:
        status = backend.stop(signal.SIGINT)
    assert status == 0, backend.output
    assert "TEST-PLUGIN (Test plugin) from libervia-test-plugin" in backend.output
    assert "backend stopped" in backend.output
    assert not list(tmp_path.glob("*.pid"))


def test_launcher_help():
    result = subprocess.run([venv_script("libervia-backend"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for option in ("--config", "--log-level", "--help"):
        assert option in result.stdout


@pytest.mark.parametrize("runner", ["twistd", "libervia-backend"])
def test_bad_configuration_is_a_clear_start_up_error(runner, process_env, tmp_path):
    config = tmp_path / "bad.conf"
    config.write_text("[DEFAULT]\nlog_level = chatty\n")
    args = [venv_script(runner)]
    if runner == "twistd":
        args += ["--nodaemon", "--pidfile=", "libervia-backend"]
    result = subprocess.run(args + ["--config", str(config)], capture_output=True,
                            text=True, env=process_env, cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert str(config) in message
    assert "[DEFAULT]" in message and "log_level" in message and "chatty" in message
    assert "Traceback" not in message
