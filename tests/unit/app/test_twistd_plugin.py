"""twistd finds the backend's plugin file in the installed environment, from any
folder (the editable install is a path entry, see pyproject.toml's package-dir), and
Python starts without loading an import hook for it."""

import subprocess
import sys

from tests.support import venv_script


def test_twistd_lists_libervia_backend_from_any_folder(tmp_path):
    result = subprocess.run([venv_script("twistd"), "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "libervia-backend" in result.stdout
    assert "XMPP client backend" in result.stdout


def test_the_installed_environment_starts_python_without_an_import_hook(tmp_path):
    # li starts in milliseconds: an editable install's finder would import pathlib (and
    # re, fnmatch) at every start of Python
    code = "import sys; print(sorted(m for m in sys.modules if 'editable' in m or " \
           "m == 'pathlib'))"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
