"""One door to fsspec for every path batchflow reads or writes, local or ``gs://``.

With ``STORAGE_EMULATOR_HOST`` set (the variable Google's own clients read), ``gs://`` goes to that emulator with
anonymous credentials: no credential lookup, so nothing probes the network beyond the emulator.
"""

from __future__ import annotations

import os
from typing import Any

from fsspec.core import url_to_fs as _url_to_fs
from fsspec.spec import AbstractFileSystem

from batchflow.errors import InputError, SpecError
from batchflow.libs.deadlines import deadlines, gcsfs_options


def storage_options(url: str) -> dict[str, Any]:
    """The fsspec options for a URL: every gs:// request bounded (libs/deadlines.py); anonymous access when a GCS
    emulator is named."""
    if not url.startswith(("gs://", "gcs://")):
        return {}
    options = gcsfs_options(deadlines())
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        # gcsfs >= 2026 asks the bucket type over gRPC, which hangs against an emulator (docs/google-apis.md, "Traps").
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        options["token"] = "anon"
    return options


def url_to_fs(url: str) -> tuple[AbstractFileSystem, str]:
    """The filesystem and the path inside it, as ``fsspec.core.url_to_fs`` gives them."""
    try:
        return _url_to_fs(url, **storage_options(url))  # type: ignore[no-any-return]
    except ImportError as exc:  # fsspec's own words name the package, not how to get it with batchflow
        extra = "gcs" if url.startswith(("gs://", "gcs://")) else None
        if extra is None:
            raise
        raise InputError(f"{url}: gs:// needs the gcsfs package: pip install 'batchflow[{extra}]'") from exc


def spec_filesystem(url: str, field: str) -> tuple[AbstractFileSystem, str]:
    """``url_to_fs`` for a path written in the spec at ``field``: an unknown protocol, or one whose package is
    missing (gs:// without gcsfs), is a SpecError naming the field."""
    try:
        return url_to_fs(url)
    except InputError as exc:
        raise SpecError(f"{field}: {exc}") from None
    except (ImportError, ValueError) as exc:
        raise SpecError(f"{field} {url!r}: {exc}") from None
