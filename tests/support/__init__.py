"""Helpers shared by the test modules: tiny training configs, trained adapters, a served engine and
a demo store for the TUI. Their fixtures are registered once, by tests/conftest.py."""
