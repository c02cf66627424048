"""Seeded, reproducible fault plans: the plan at run time (``plan``) and its file, checked (``plan_file``)."""
