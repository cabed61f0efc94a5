"""Example third-party plugin for the Libervia backend: cooking recipes over pubsub."""
