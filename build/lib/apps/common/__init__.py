"""Plumbing shared by every app: the ``ssm`` CLI, training defaults, atomic I/O, errors."""
