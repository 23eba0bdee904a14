"""The adapter-manager terminal UI."""
