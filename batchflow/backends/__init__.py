"""Backends behind one Protocol, looked up by the spec's ``backend.type``: the contract in ``base.py``, the
implementations beside it, the registry in ``registry.py`` (so no implementation imports the registry)."""
