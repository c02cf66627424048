"""Duplicate keys are found in memory that does not grow with the input: hashes spilled to partition files."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.helpers import cli, write_jsonl, write_spec

from batchflow.prepare import duplicates as keys
from batchflow.prepare.duplicates import KeyHashes
from batchflow.state.state import StateStore


def _hashes(tmp_path: Path, values: list[str]) -> set[int]:
    found = KeyHashes(tmp_path / "k")
    for i, value in enumerate(values, 1):
        found.add(hash(value))
        if not i % 7:
            found.spill_if_full()
    return found.repeated()


def test_repeated_hashes_are_found_in_memory_and_across_spilled_partitions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = [f"k{i}" for i in range(2000)] + ["k5", "k1999"]
    assert _hashes(tmp_path, values) == {hash("k5"), hash("k1999")}
    monkeypatch.setattr(keys, "_BATCH", 50)
    assert _hashes(tmp_path, values) == {hash("k5"), hash("k1999")}
    assert _hashes(tmp_path, values[:2000]) == set()
    assert not (tmp_path / "k").exists(), "the spill files are removed"


def test_a_duplicate_far_apart_in_a_large_input_names_both_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "_BATCH", 100)  # spill every ~100 keys, as 5M records would every 131,072
    records = [{"id": f"r{i}", "text": "x"} for i in range(1, 3001)]
    records[2899]["id"] = "r17"
    write_jsonl(tmp_path / "data/in.jsonl", records)
    result = cli("run", str(write_spec(tmp_path, jobs={"max_requests": 500})))
    assert result.exit_code == 2
    assert "data/in.jsonl:2900: record 2900: duplicate key 'r17' (record 17 has it too)" in result.stderr
    assert StateStore(tmp_path / ".batchflow/t").load() is None, "nothing planned, nothing submitted"
    assert not (tmp_path / ".batchflow/t/keys.tmp").exists()
