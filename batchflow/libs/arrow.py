"""One door to pyarrow, for Parquet sources and outputs: imported on first use, with the allocator chosen here.

pyarrow is an extra (``pip install 'batchflow[parquet]'``): without it a Parquet source or output stops with
``INSTALL_HINT`` (exit 2) before anything runs, and nothing else needs it.

Arrow's default allocator (mimalloc) kept ~30 MB more resident than the system's at any size, measured with
``scripts/parquet_rss.py``: at 20,000 rows the prep peaked at 120 MB against 97, the keep + merge at 145 against
110 (JSON Lines: 46 and 47). So ``ARROW_DEFAULT_MEMORY_POOL`` is set to ``system`` before pyarrow is first imported,
unless the environment already names a pool (as ``storage.py`` sets a default for gcsfs). It is read once, when
Arrow first allocates: a pyarrow imported and used before batchflow's first Parquet file keeps its own.
"""

from __future__ import annotations

import os
from typing import Any

INSTALL_HINT = "needs pyarrow: pip install 'batchflow[parquet]'"


def arrow() -> tuple[Any, Any]:
    """``pyarrow`` and ``pyarrow.parquet``, imported now (ImportError when the extra is not installed)."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    import pyarrow
    import pyarrow.parquet

    return pyarrow, pyarrow.parquet


def pyarrow_missing() -> bool:
    """Whether pyarrow cannot be imported here: a Parquet source or output then stops before anything runs."""
    try:
        arrow()
    except ImportError:
        return True
    return False


def release_unused() -> None:
    """Freed memory Arrow's allocator still holds goes back to the system (after a Parquet file is read or
    written: the rest of the run has no use for it)."""
    pa, _ = arrow()
    pa.default_memory_pool().release_unused()
