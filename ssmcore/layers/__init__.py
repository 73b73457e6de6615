"""One file per layer (see :mod:`ssmcore.registry` for the names); the package namespace is :mod:`ssmcore`."""
