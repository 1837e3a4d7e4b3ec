"""A local Qonto-compatible API for `demo`, the tests and users' own checks. Imported only by the
commands that serve it, never by the agent's own flows."""
