#!/usr/bin/env python
"""How the kept-answer index was chosen: SQLite (stdlib) against per-partition hash sets, on the same digests.

    python scripts/index_choice.py --records 1000000

Both sides get N request digests of the current input, of which 90 % are kept from a run before (the rest new),
and do what a run does with them: find the records to send (an anti-join), and for the merge, walk the current
records in input order with each one's kept answer. SQLite: a table of the current records (ordinal, digest) and
one of the kept answers keyed by digest, in a file with the journal and fsync off (its fastest settings).
Partitions: the digests split by their low bits, each partition's kept digests in a set. The figures are in
docs/running-again.md ("Why not SQLite").
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import tempfile
import time
from pathlib import Path

_ANSWER = b'{"response":{"candidates":[{"content":{"parts":[{"text":"positive"}]}}]},"attempts":1}'


def _timed(label: str, fn: object) -> object:
    start = time.perf_counter()
    result = fn()  # type: ignore[operator]
    print(f"  {label:<44}{time.perf_counter() - start:>7.2f} s")
    return result


def sqlite_side(digests: list[bytes], kept: int, directory: Path) -> None:
    con = sqlite3.connect(directory / "index.sqlite", isolation_level=None)
    con.execute("pragma journal_mode=off")
    con.execute("pragma synchronous=off")
    con.execute("create table kept(digest blob primary key, answer blob) without rowid")
    con.execute("create table cur(digest blob)")

    def fill_kept() -> None:
        con.execute("begin")
        con.executemany("insert into kept values (?, ?)", ((d, _ANSWER) for d in digests[:kept]))
        con.execute("commit")

    def fill_current() -> None:
        con.execute("begin")
        con.executemany("insert into cur values (?)", ((d,) for d in digests))
        con.execute("commit")

    print("SQLite")
    _timed("insert the kept answers (a run's keep)", fill_kept)
    _timed("insert the current records (a run's prep)", fill_current)
    sent = _timed("anti-join: the records to send", lambda: con.execute(
        "select c.rowid from cur c where not exists (select 1 from kept k where k.digest = c.digest)").fetchall())
    _timed("ordered join: each record's answer", lambda: sum(1 for _ in con.execute(
        "select k.answer from cur c left join kept k on k.digest = c.digest order by c.rowid")))
    print(f"  ({len(sent):,} to send)")  # type: ignore[arg-type]


def partition_side(digests: list[bytes], kept: int, partitions: int = 128) -> None:
    mask = partitions - 1
    print("partitioned sets")

    def split(items: list[bytes]) -> list[list[bytes]]:
        parts: list[list[bytes]] = [[] for _ in range(partitions)]
        for d in items:
            parts[d[0] & mask].append(d)
        return parts

    kept_parts = _timed("split the kept digests", lambda: split(digests[:kept]))
    current = _timed("split the current digests (a run's prep)", lambda: split(digests))

    def anti_join() -> int:
        n = 0
        for p in range(partitions):
            have = set(kept_parts[p])  # type: ignore[index]
            n += sum(d not in have for d in current[p])  # type: ignore[index]
        return n

    sent = _timed("anti-join: the records to send", anti_join)
    print(f"  ({sent:,} to send)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    digests = [hashlib.sha256(b"request %d" % i).digest()[:16] for i in range(args.records)]
    kept = args.records * 9 // 10
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_side(digests, kept, Path(tmp))
    partition_side(digests, kept)


if __name__ == "__main__":
    main()
