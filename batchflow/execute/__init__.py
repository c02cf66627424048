"""Running a spec: the pure plan (``plan``), the runner's cycle (``runner``) and its threads (``threads``); the
execution paths behind a contract (``path``) and a registry (``paths``): ``shards_path``, ``native_path`` (with its
SQL, ``native_sql``)."""
