"""Local stack and dev-runner scripts (run as files; importable for the end-to-end tests)."""
