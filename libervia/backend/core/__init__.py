"""Core of the backend: application service, configuration, triggers, plugin loader."""
