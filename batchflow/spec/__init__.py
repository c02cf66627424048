"""The spec: its YAML read with positions (``reader``), checked (``check``, against ``spec.schema.json``), made into
typed records (``spec``); the models and limits it is checked against; durations and sizes (``units``)."""
