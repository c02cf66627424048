"""The BigQuery-native path renders prompts in SQL: a list of parts (media among them) is refused, not sent empty."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from batchflow.errors import SpecError
from batchflow.execute.native_sql import request_tree
from batchflow.spec.spec import load_spec


def test_the_native_path_refuses_a_list_of_parts(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent("""\
        version: 1
        name: n
        model: gemini-2.5-flash
        source: {type: inline, records: [{path: a.png}]}
        prompt: ["Describe it.", {media: "{{ path }}"}]
        output: {path: out.jsonl}
        """))
    with pytest.raises(SpecError, match=r"spec.yaml:5:\d+: prompt: with source.native a list of parts"):
        request_tree(load_spec(path, environ={}))
