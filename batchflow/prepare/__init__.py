"""Preparing a run: read -> render -> key -> parts (``prepare``), duplicate keys found in flat memory
(``duplicates``), each unit staged as soon as it is whole (``staging``)."""
