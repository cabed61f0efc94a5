"""The documentation builds without a single warning."""

import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).parent.parent / "doc"


def test_sphinx_builds_the_documentation_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="Sphinx is part of the test dependencies")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(DOC), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    index = (tmp_path / "html" / "index.html").read_text()
    assert "Libervia backend" in index
    # the configuration reference is generated from the declared options
    reference = (tmp_path / "html" / "configuration.html").read_text()
    for key in ("local_dir", "plugins_disabled", "secrets_key", "max_frame_size"):
        assert key in reference

