"""The job table both surfaces share: disk and time helpers (``store``), job records (``records``) and the
worker that computes them (``worker``)."""
