"""The backend's own plugins, one module per protocol or feature.

They are registered through the ``libervia.backend.plugins`` entry point group, like
third-party plugins (see ``pyproject.toml``).
"""
