"""The one place the ssm-suite version is written; pyproject.toml and ``ssm --version`` read it."""

__version__ = "0.2.0"
