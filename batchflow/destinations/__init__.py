"""Destinations: where the output rows go, looked up by ``output.type``: the contract in ``base.py``, the
implementations beside it, the registry in ``registry.py`` (so no implementation imports the registry)."""
