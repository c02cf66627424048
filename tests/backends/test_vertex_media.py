"""Until Vertex stages media, a vertex spec with media parts is refused at its place before anything is done."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from batchflow.backends.vertex import VertexBackend
from batchflow.errors import SpecError
from batchflow.spec.spec import load_spec


def test_a_vertex_spec_with_a_media_part_is_refused_at_the_prompt(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent("""\
        version: 1
        name: v
        backend: {type: vertex, project: p, location: us-central1, staging: gs://b/stage}
        model: gemini-2.5-flash
        source: {type: inline, records: [{path: a.png}]}
        prompt: ["Describe it.", {media: "{{ path }}"}]
        output: {path: out.jsonl}
        """))
    with pytest.raises(SpecError, match=r"spec.yaml:6:\d+: prompt: media parts are not staged on the vertex"):
        VertexBackend.from_spec(load_spec(path, environ={}))
