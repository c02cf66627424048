"""The deterministic model behind both surfaces: its answers (``deterministic``), blocked and truncated answers
(``degraded``), values for a response schema (``schema_values``) and the models it serves (``catalog``)."""
