"""Vertex AI's ``batchPredictionJobs`` surface: its routes, engine and job records; jobs run over GCS (``execute``,
``output``, ``echo``) and BigQuery (``bigquery``); list filters (``filter_parser``, ``job_filter``)."""
