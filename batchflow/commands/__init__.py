"""What the commands print beyond a run: ``validate``/``plan`` (``plan_report``), ``status``, ``cancel``, several
specs at once (``multi_spec``) and the live view of ``run`` (``live_view``)."""
