"""Thin doors to the libraries batchflow leans on, each imported in one place: fsspec (``storage``),
google-cloud-bigquery (``bigquery``), pyarrow (``arrow``), orjson (``jsonio``), the garbage collector
(``gc_tuning``)."""
