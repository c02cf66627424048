"""Shared fixtures: tests never write to $HOME and never reach the network."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.servers import batchflow_emulator

# Nothing in a test may look for Google credentials on the network (a GCE metadata probe goes to a non-loopback
# address): say we are not on GCE, and point the metadata server at a closed loopback port in case.
os.environ["NO_GCE_CHECK"] = "True"
os.environ["GCE_METADATA_HOST"] = os.environ["GCE_METADATA_IP"] = "127.0.0.1:9"


@pytest.fixture(autouse=True)
def dont_write_to_home_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def emulator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A separately started `batchflow emulator`, as a user would run one (jobs take half a second)."""
    with batchflow_emulator(tmp_path_factory.mktemp("emulator"), job_seconds=0.5) as url:
        yield url


def genai_client(base_url: str) -> Any:
    """The unmodified google-genai SDK, pointed at an emulator."""
    from google import genai
    from google.genai import types

    return genai.Client(api_key="test", http_options=types.HttpOptions(base_url=base_url))


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """A real GCS emulator for the session (`@pytest.mark.gcs` tests): its URL, also in STORAGE_EMULATOR_HOST.

    gcsfs (`token="anon"`) and google-cloud-storage find it through that variable; gcsfs also needs
    GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false, or each call first waits 60 s on a gRPC bucket-type lookup.
    """
    from support.gcs import executable, start_gcs_emulator

    if executable() is None:
        pytest.skip("gcp-storage-emulator is not installed")
    emulator = start_gcs_emulator()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", emulator.url)
        mp.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        try:
            yield emulator.url
        finally:
            emulator.stop()


@pytest.fixture(scope="session")
def bigquery_emulator() -> Iterator[str]:
    """A real BigQuery emulator for the session (`@pytest.mark.bigquery` tests): its URL, also in
    BIGQUERY_EMULATOR_HOST, where batchflow (and google-cloud-bigquery) find it. Its default project is `test`."""
    from support.bq import installed, start_bigquery_emulator

    if not installed():
        pytest.skip("bqemulator or google-cloud-bigquery is not installed")
    emulator = start_bigquery_emulator()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIGQUERY_EMULATOR_HOST", emulator.url)
        try:
            yield emulator.url
        finally:
            emulator.stop()


@pytest.fixture
def fs(gcs_emulator: str) -> Any:
    """gcsfs on the GCS emulator (anonymous, as gcsfs goes with STORAGE_EMULATOR_HOST)."""
    import gcsfs

    return gcsfs.GCSFileSystem(token="anon", project="p")


@pytest.fixture
def bucket(fs: Any) -> str:
    """A new bucket on the GCS emulator, for one test."""
    name = f"bf-{uuid.uuid4().hex[:10]}"
    fs.mkdir(name)
    return name
