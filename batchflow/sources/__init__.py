"""Sources: where the records come from, looked up by ``source.type``: the contract in ``base.py``, the
implementations beside it, the registry in ``registry.py`` (so no implementation imports the registry)."""
