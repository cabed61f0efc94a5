"""Tests of the protocol and feature plugins (a package: test module names such as
``test_pubsub_cache`` exist in the integration tests too)."""
