"""The kernel of the backend: configuration, constants, exceptions, logs, triggers,
plugin loader, service helpers, and the contracts between the parts
(:mod:`~libervia.backend.core.interfaces`).

It imports no other package of the backend.
"""
