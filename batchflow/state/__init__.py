"""What a run keeps on disk: the state and its lock (``state``; on gs:// with a lease, ``gcs``), the shard files
(``shard_files``) and the cost ledger (``cost``)."""
