"""Vertex AI batch jobs that read a ``bq://`` table of requests and write a ``bq://`` table of results.

The native path (``batchflow.execute.native_path``) uses this instead of the ``Backend`` protocol: there is nothing to
stage or download, the tables stay in BigQuery. Lookups, polling and cancelling are the other Vertex jobs' own
(``SdkBackend``); the key travels as a passthrough column of the tables, so no label is needed.
"""

from __future__ import annotations

from typing import Any

from batchflow.backends.base import JobInfo
from batchflow.backends.sdk import SdkBackend, api_errors
from batchflow.backends.vertex import vertex_client
from batchflow.libs.deadlines import genai_once
from batchflow.spec.spec import Spec


class VertexTableJobs(SdkBackend):
    """Creates, finds, polls and cancels Vertex batch jobs over BigQuery tables."""

    @classmethod
    def from_spec(cls, spec: Spec) -> VertexTableJobs:
        return cls(vertex_client(spec))

    def create_job(self, model: str, source: str, dest: str, display_name: str,
                   parameters: dict[str, Any] | None = None) -> JobInfo:
        """One job from table ``source`` into table ``dest`` (both ``bq://project.dataset.table``); ``parameters``,
        the job's ``modelParameters`` (a text embedding's size, ``vertex.job_parameters``), in the body as they are:
        google-genai has no field of its own for them."""
        from google.genai import types

        extra = {"extra_body": {"modelParameters": parameters}} if parameters else {}
        config = types.CreateBatchJobConfig(display_name=display_name, dest=dest,
                                            http_options=genai_once(self.deadlines, **extra))
        with api_errors(f"create {display_name}"):
            return self._info(self.client.batches.create(model=model, src=source, config=config))

    def _output(self, job: Any) -> str | None:
        # The SDK keeps only `outputInfo.bigqueryOutputTable` (a bare table name): the table asked for is the one
        # written (a job given a dataset only would name its own), so the asked-for URI is the answer.
        dest = job.dest
        uri = dest.bigquery_uri if dest is not None else None
        return uri.removeprefix("bq://") if uri else None

    def _find_filter(self, display_name: str) -> str | None:
        return f'display_name="{display_name}"'
