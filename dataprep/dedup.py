"""preflight's duplicate and contamination pass over the rows it keeps, in input order, as they stream.

- ``--dedup exact``: a row whose conversation equals an earlier one goes to rejects (``duplicate_row``).
- ``--dedup near``: exact first, then a row whose estimated Jaccard to an earlier kept row is >= 0.7
  (``dataprep.neardup``) goes to rejects (``near_duplicate``), naming the row it copies.
- otherwise (the default) near duplicates are kept, and the split puts each one on the side of the first row of
  its cluster (``side_digest``), as it does for exact copies: validation never holds a near copy of a train row.
  The index stops growing at ``MAX_INDEXED`` kept rows (3.4-5 KB each in rensa's LSH: ~1.3 GB); later rows are
  still looked up in it, and the figures say the cap was reached.
- ``--eval PATH``: rows sharing a normalised 13-gram with an eval item (``dataprep.neardup.Contamination``)
  are counted per eval set, or, with ``--drop-contaminated``, go to rejects (``eval_contamination``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .findings import Finding, finding

MAX_INDEXED = 250_000
MAX_ROWS_LISTED = 100
EXAMPLE_CHARS = 120


class RowChecks:
    def __init__(
        self,
        *,
        dedup: str | None = None,
        near: bool = True,
        eval_paths: Sequence[str] = (),
        drop_contaminated: bool = False,
        own_validation: bool = False,
        max_indexed: int = MAX_INDEXED,
    ):
        """``own_validation``: a validation file comes apart (``leakage``): remember every kept row's digest."""
        from .neardup import THRESHOLD, NearDup

        self.exact = dedup in ("exact", "near")
        self.drop_near = dedup == "near"
        self.near = NearDup() if (near or self.drop_near) else None
        self.threshold = THRESHOLD
        self.max_indexed = max_indexed
        self.capped = False
        self.first_of: dict[bytes, int] = {}  # exact: conversation digest -> first row
        self.rep_digest: dict[int, str] = {}  # near, kept: first row of a cluster -> its conversation hash
        self.cluster_of: dict[int, int] = {}  # near, kept: a member row -> the first row of its cluster
        self.sizes: Counter = Counter()  # first row -> members (not counting itself)
        self.largest: tuple[int, int, str] | None = None  # (first row, members, a member's text)
        self.contamination = None
        if eval_paths:
            self.contamination = load_evals(eval_paths)
        self.drop_contaminated = drop_contaminated
        self.hits: dict[str, list[tuple[int, int, str]]] = {}  # eval set -> (row, eval row, n-gram)
        self.hit_counts: Counter = Counter()
        # with a validation file: every kept row's digest, for exact leakage
        self.train_digests: set[bytes] | None = set() if own_validation else None
        self._last: tuple[int, str] = (0, "")  # (row, conversation hash) of the row ``see`` looked at last
        self.leaks: list[tuple[int, int, float]] = []  # (validation row, train row, estimated Jaccard)
        self.leak_count = 0
        self.validation_rows = 0

    def see(self, row: int, conv: Mapping[str, Any]) -> tuple[str, str] | None:
        """``(code, message)`` when the row goes to rejects, else None (it is kept, and noted)."""
        from .split import conversation_hash

        digest = conversation_hash(conv)
        self._last = (row, digest)
        if self.train_digests is not None:
            self.train_digests.add(bytes.fromhex(digest[:32]))
        if self.exact:
            key = bytes.fromhex(digest[:32])
            first = self.first_of.get(key)
            if first is not None:
                return "duplicate_row", f"an exact duplicate of row {first}"
            self.first_of[key] = row
        if self.contamination is not None:
            hit = self.contamination.check(row, conv)
            if hit is not None:
                name, eval_row, ngram = hit
                self.hit_counts[name] += 1
                listed = self.hits.setdefault(name, [])
                if len(listed) < MAX_ROWS_LISTED:
                    listed.append((row, eval_row, ngram))
                if self.drop_contaminated:
                    return (
                        "eval_contamination",
                        f"shares the n-gram {ngram!r} with row {eval_row} of eval set {name}",
                    )
        if self.near is None:
            return None
        if self.near.kept >= self.max_indexed:
            self.capped = True
            m = self.near.find(conv)
            first, j = (m.row, m.jaccard) if m is not None else (None, None)
        else:
            first = self.near.check(row, conv)
            j = self.near.last.jaccard if first is not None and self.near.last is not None else None
        if first is None:
            self.rep_digest[row] = digest
            return None
        if self.drop_near:
            return "near_duplicate", (
                f"a near duplicate of row {first} (estimated Jaccard {j:.2f} >= {self.threshold})"
            )
        self.cluster_of[row] = first
        self.sizes[first] += 1
        if self.largest is None or self.sizes[first] > self.largest[1]:
            from .neardup import conversation_text

            self.largest = (first, self.sizes[first], conversation_text(conv)[:EXAMPLE_CHARS])
        return None

    def leakage(self, row: int, conv: Mapping[str, Any]) -> None:
        """A row of a validation file given apart (``--validation``): does train hold a copy or near copy?"""
        from .split import conversation_hash

        self.validation_rows += 1
        hit: tuple[int, float] | None = None
        if (
            self.train_digests is not None
            and bytes.fromhex(conversation_hash(conv)[:32]) in self.train_digests
        ):
            hit = (0, 1.0)
        if self.near is not None:
            m = self.near.find(conv)
            if m is not None:
                hit = (m.row, m.jaccard)
        if hit is not None:
            self.leak_count += 1
            if len(self.leaks) < MAX_ROWS_LISTED:
                self.leaks.append((row, hit[0], hit[1]))

    def digest(self, row: int, conv: Mapping[str, Any]) -> str:
        """The conversation hash of ``row``: the one ``see`` just computed (the split asks right after), so the
        hot path hashes each row once."""
        if self._last[0] == row and self._last[1]:
            return self._last[1]
        from .split import conversation_hash

        return conversation_hash(conv)

    def side_digest(self, row: int, digest: str) -> str:
        """The digest deciding ``row``'s side of the split: its cluster's first row's, or its own."""
        first = self.cluster_of.get(row)
        return digest if first is None else self.rep_digest.get(first, digest)

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.near is not None:
            out["near_duplicates"] = {
                "threshold": self.threshold,
                "mode": "dropped" if self.drop_near else "kept, each cluster on one side of the split",
                "clusters": len(self.sizes),
                "rows_in_clusters": int(sum(self.sizes.values()) + len(self.sizes)),
                "largest": None
                if self.largest is None
                else {"first_row": self.largest[0], "rows": self.largest[1] + 1, "example": self.largest[2]},
                "index_capped": self.capped,
                "indexed_rows": self.near.kept,
            }
        if self.validation_rows:
            out["leakage"] = {
                "validation_rows": self.validation_rows,
                "with_a_copy_in_train": self.leak_count,
                "examples": [
                    {"validation_row": v, "train_row": t or None, "jaccard": round(j, 3)}
                    for v, t, j in self.leaks[:5]
                ],
            }
        if self.contamination is not None:
            out["contamination"] = {
                "rule": f"a shared normalised {self.contamination.n}-gram with an eval item",
                "eval_ngrams": self.contamination.ngrams,
                "dropped": self.drop_contaminated,
                "by_eval_set": {
                    name: {
                        "rows": n,
                        "examples": [
                            {"row": r, "eval_row": e, "ngram": g} for r, e, g in self.hits.get(name, [])[:5]
                        ],
                    }
                    for name, n in sorted(self.hit_counts.items())
                },
            }
        return out

    def findings(self) -> list[Finding]:
        out: list[Finding] = []
        if self.sizes and not self.drop_near:
            n = int(sum(self.sizes.values()))
            first, members, text = self.largest or (0, 0, "")
            out.append(
                finding(
                    "near_duplicate",
                    f"{n} row(s) are near duplicates of an earlier row (estimated Jaccard >= {self.threshold}) in "
                    f"{len(self.sizes)} cluster(s); kept, each cluster on one side of the split. Largest: "
                    f"{members + 1} rows like row {first} ({text!r})",
                    severity="info",
                    hint="drop them with $[dedup] near unless the repetition is intended",
                    rows=sorted(self.cluster_of)[:MAX_ROWS_LISTED],
                    count=n,
                    clusters=len(self.sizes),
                )
            )
        if self.leak_count:
            v, t, j = self.leaks[0]
            like = f"train row {t} (estimated Jaccard {j:.2f})" if t else "an exact copy in train"
            out.append(
                finding(
                    "near_duplicate_leakage",
                    f"{self.leak_count} of the {self.validation_rows} validation row(s) have a copy or near copy in "
                    f"train (validation row {v}: {like}): the validation loss partly measures memorisation",
                    rows=[v for v, _, _ in self.leaks],
                    count=self.leak_count,
                )
            )
        if not self.drop_contaminated:
            for name, n in sorted(self.hit_counts.items()):
                row, eval_row, ngram = self.hits[name][0]
                out.append(
                    finding(
                        "eval_contamination",
                        f"{n} training row(s) share a 13-gram with eval set {name} (row {row}: {ngram!r}, eval row "
                        f"{eval_row}): an eval on it measures memory",
                        rows=[r for r, _, _ in self.hits[name]],
                        count=n,
                        eval_set=name,
                    )
                )
        return out


def load_evals(paths: Iterable[str | Path], spec: Any = None, *, n: int | None = None) -> Any:
    """Eval sets as a frozen ``neardup.Contamination``: each path is anything ``normalize`` reads (named by its
    file name), or a folder whose files are each one eval set (a ``datasets`` ``save_to_disk`` folder is one
    set). ``spec``: a ``pipeline.ConvertSpec`` for reading them. Rows the converter rejects are skipped. (Here,
    not in neardup: normalize uses neardup, and reading a file is the row pipeline's job.)"""
    from .neardup import CONTAMINATION_N, Contamination, eval_set_paths
    from .pipeline import conversations

    c = Contamination(n=CONTAMINATION_N if n is None else n)
    for p in paths:
        for name, path in eval_set_paths(p):
            c.add_conversations(name, conversations(path, spec))
    c.freeze()
    return c
