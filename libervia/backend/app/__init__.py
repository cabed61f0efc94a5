"""The application root: what builds the backend and runs it.

* :mod:`~libervia.backend.app.main`: :class:`~.main.Backend`, the host given to plugins
  and the root of the service tree;
* :mod:`~libervia.backend.app.api`: the core's bridge methods (profiles, connections);
* :mod:`~libervia.backend.app.systemd`: readiness notifications to systemd;
* :mod:`~libervia.backend.app.tap`: twistd integration (``twistd libervia-backend``);
* :mod:`~libervia.backend.app.launcher`: the ``libervia-backend`` command.

It is the only package allowed to import all the others.
"""
