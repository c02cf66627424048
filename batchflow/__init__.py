"""batchflow: declarative pipelines for Gemini / Vertex AI batch prediction.

The Python API (docs/python-api.md): ``run`` a spec, ``load_spec`` to read one, ``map`` records to rows in a
notebook; the errors they raise are those of ``batchflow.errors``.
"""

from batchflow.api import load_spec, map, run
from batchflow.errors import BatchflowError, InputError, RunFailed, SpecError

__version__ = "0.1.0"
__all__ = ["BatchflowError", "InputError", "RunFailed", "SpecError", "__version__", "load_spec", "map", "run"]
