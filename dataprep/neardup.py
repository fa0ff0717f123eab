"""Near-duplicate detection (MinHash + LSH) and eval-set contamination (13-gram overlap), streaming.

Why: exact dedup (``--dedup``) misses the copies that matter most in scraped and synthetic SFT data, the same
answer with a changed number, a reworded word or different whitespace. Repeated examples are learned verbatim and
waste steps; a validation row with a near copy in train makes the validation loss a memorisation score.

**What is compared** (``conversation_text``): the content of the user and assistant messages, joined by newlines.
System prompts, tool schemas and the chat template's scaffolding are left out: a shared system prompt would make
unrelated rows look alike.

**Defaults, and why**

- *Normalisation*: lowercase, then words are the runs of ``\\w`` characters (Unicode letters, digits, ``_``), so
  punctuation and any whitespace difference vanish. Digits are kept: "3 apples" and "5 apples" differ by one word
  (a long row with a changed number stays a near duplicate; a short math item with other numbers does not).
- *Shingles*: word 3-grams (``ngram=3``). 5-grams (common for web documents) are too harsh on SFT rows of
  50-200 words: each changed word removes ``n`` shingles, so 5 changed words in a 130-word row give
  J ~ 0.67 with 5-grams, under the threshold, but J ~ 0.79 with 3-grams; 2-grams and single words make
  rows on one topic alike. A row with fewer than ``ngram`` words
  is one shingle (its whole word sequence): short rows match only when their normalised words are equal.
- *num_perm = 128*: the MinHash estimate of J has a standard deviation of sqrt(J(1-J)/128) ~ 0.04 at J = 0.7.
- *threshold = 0.7* (estimated Jaccard of the word 3-gram sets): k changed words in an N-word row give
  J ~ (N-3k)/(N+3k), so 0.7 is about one word in 17 changed. 0.8 (one in 28) missed 11% of the injected copies
  of ``bench/bench_neardup.py`` (a changed number and two changed words in a 60-word answer is J ~ 0.75);
  0.7 finds 97.7% with no false positive there.
- *LSH: 32 bands x 4 rows*: a pair becomes a candidate with probability 1-(1-J^4)^32: 0.9998 at J = 0.7, 0.87 at
  0.5, 0.23 at 0.3, 0.003 at 0.1. Every candidate is then verified by the MinHash estimate (the fraction of
  equal signature values, one vectorised numpy comparison against all candidates) against the threshold, which
  keeps false positives low: LSH alone would pass many pairs around J = 0.4.

**Streaming and memory**: rows arrive one at a time (``NearDup.check``); the first row of each cluster is kept and
indexed, and a later row whose estimated Jaccard to a kept row is >= threshold is reported as a near duplicate of
it (the most similar kept row; the earliest on ties) and is not indexed. State per *kept* row: its signature,
128 x uint32 = 512 bytes in a growing numpy array (doubling, so up to 2x), its source row (a list entry), and its
32 band entries in rensa's LSH index (a hash-table entry and a small vector of keys per band, ~2.6 KB): measured
3.4 KB per kept row (RSS growth over 100,000 distinct rows), ~5 KB at 950,000 (bench/README.md), so 1M kept rows need ~5 GB. Fewer bands would
halve the index but lose recall at the threshold (see the LSH line above). Duplicates and rows without
text cost nothing.

**Library**: rensa (Rust MinHash, ``RMinHash`` + ``RMinHashLSH``), chosen over datasketch after
``bench/bench_neardup.py``: several times faster to hash a row's shingles (datasketch hashes each shingle in
Python and permutes with numpy), with a smaller index; see bench/README.md for the figures.

**Contamination** (``Contamination``): the GPT-3 paper's rule (Brown et al. 2020, appendix C): a training row is
contaminated when it shares at least one normalised 13-gram (same normalisation as above) with an eval item.
Each message of an eval item (the question, the answer) is indexed on its own, so no n-gram spans the
boundary a training row would not reproduce. A message shorter than 13 words is indexed by its whole word sequence
when it has at least ``min_words`` (8) words, and skipped below that (an item with no message left is counted in
``skipped_short``): an 8-word overlap is still specific, shorter ones ("what is the capital of france") fire on
innocent rows. The training side is the whole ``conversation_text`` (its n-grams may span its messages). The index is a sorted numpy
array of 64-bit hashes (blake2b) with the eval item of each: 12 bytes per eval n-gram.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NUM_PERM = 128
THRESHOLD = 0.7
BANDS = 32
NGRAM = 3
SEED = 1  # fixed: the same input gives the same clusters on every run and machine

_WORD = re.compile(r"\w+")
TEXT_ROLES = ("user", "assistant")


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: the text ones
        return "\n".join(
            p.get("text") or "" for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)
        )
    return ""


def conversation_text(conv: Mapping[str, Any]) -> str:
    """The user and assistant contents of a conversation (``{"messages": [...]}``), joined by newlines: what a
    near duplicate is judged on (system prompts, tools and template scaffolding left out)."""
    msgs = conv.get("messages") or []
    return "\n".join(
        _content_text(m.get("content"))
        for m in msgs
        if isinstance(m, Mapping) and m.get("role") in TEXT_ROLES
    )


def words(text: str) -> list[str]:
    """The normalised words of a text: lowercased runs of ``\\w`` (punctuation and whitespace dropped)."""
    return _WORD.findall(text.lower())


def shingles(ws: list[str], n: int = NGRAM) -> list[str]:
    """Word n-grams (a text shorter than ``n`` words is one shingle); empty for no words."""
    if len(ws) <= n:
        return [" ".join(ws)] if ws else []
    return [" ".join(ws[i : i + n]) for i in range(len(ws) - n + 1)]


@dataclass(frozen=True)
class Match:
    """A near duplicate: the earlier kept row it duplicates and the estimated Jaccard similarity."""

    row: int
    jaccard: float


class NearDup:
    """Streaming near-duplicate detector: ``check(row, conversation)`` in input order.

    Returns the earlier row it duplicates (``None`` when it is the first of its cluster, and then it is indexed).
    ``last`` holds the ``Match`` of the latest duplicate (its estimated Jaccard, for messages).
    """

    def __init__(
        self,
        threshold: float = THRESHOLD,
        *,
        num_perm: int = NUM_PERM,
        bands: int = BANDS,
        ngram: int = NGRAM,
        seed: int = SEED,
    ):
        try:
            from rensa import RMinHash, RMinHashLSH
        except ImportError as err:  # a dependency of dataprep: an environment installed without it
            from .errors import MissingDependency

            raise MissingDependency(
                f"near-duplicate detection needs the rensa package ({err})",
                hint='pip install "rensa>=0.5.0,<0.6" (or $[no_near_dup] to skip the check)',
            ) from None

        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold {threshold}: must be in (0, 1]")
        if num_perm % bands:
            raise ValueError(f"num_perm {num_perm} is not a multiple of bands {bands}")
        self.threshold, self.num_perm, self.bands, self.ngram, self.seed = (
            threshold,
            num_perm,
            bands,
            ngram,
            seed,
        )
        self._minhash = RMinHash
        # rensa's threshold only matters for is_similar; the bands fix the candidate curve
        self._lsh = RMinHashLSH(threshold=threshold, num_perm=num_perm, num_bands=bands)
        self._sigs = np.empty((1024, num_perm), dtype=np.uint32)  # signatures of kept rows, by index
        self._rows: list[int] = []  # the source row of each kept index
        self.last: Match | None = None

    @property
    def kept(self) -> int:
        """Rows indexed so far (the first of each cluster)."""
        return len(self._rows)

    def signature(self, text: str) -> Any | None:
        """The RMinHash of a text's shingles, or None when it has no words."""
        sh = shingles(words(text), self.ngram)
        if not sh:
            return None
        m = self._minhash(num_perm=self.num_perm, seed=self.seed)
        m.update(sh)
        return m

    def check(self, row: int, conversation: Mapping[str, Any]) -> int | None:
        """The earlier kept row ``conversation`` nearly duplicates, or None (then it is kept and indexed)."""
        return self.check_text(row, conversation_text(conversation))

    def check_text(self, row: int, text: str) -> int | None:
        """``check`` on a text already extracted."""
        m = self.signature(text)
        self.last = None if m is None else self._find(m)
        if self.last is not None:
            return self.last.row
        if m is not None:
            self._index(row, m)
        return None

    def find(self, conversation: Mapping[str, Any]) -> Match | None:
        """The kept row ``conversation`` nearly duplicates, without indexing it: for rows checked against an
        index they must not join (validation rows against train: ``near_duplicate_leakage``)."""
        m = self.signature(conversation_text(conversation))
        return None if m is None else self._find(m)

    def _find(self, m: Any) -> Match | None:
        cands = self._lsh.query(m)
        if not cands:
            return None
        sig = np.asarray(m.digest(), dtype=np.uint32)
        idx = np.fromiter(cands, dtype=np.int64, count=len(cands))
        est = (self._sigs[idx] == sig).mean(axis=1)
        best = est.max()
        if best < self.threshold:
            return None
        k = int(idx[est == best].min())  # the earliest kept row among the most similar
        return Match(self._rows[k], float(best))

    def _index(self, row: int, m: Any) -> None:
        k = len(self._rows)
        if k == len(self._sigs):
            self._sigs = np.concatenate([self._sigs, np.empty_like(self._sigs)])
        self._sigs[k] = np.asarray(m.digest(), dtype=np.uint32)
        self._rows.append(row)
        self._lsh.insert(k, m)


# -- contamination -----------------------------------------------------------------------------------------

CONTAMINATION_N = 13
MIN_WORDS = 8


def _h64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class Hit:
    """A contaminated training row: the eval set and item it overlaps, and the shared n-gram (normalised)."""

    eval_name: str
    eval_row: int
    ngram: str

    def __iter__(self) -> Iterator[Any]:  # unpacks as (eval_name, eval_row, ngram)
        return iter((self.eval_name, self.eval_row, self.ngram))


class Contamination:
    """Eval items' normalised 13-grams; ``check(row, conversation)`` -> ``Hit`` (eval_name, eval_row, ngram) for
    the first shared n-gram, or None. Add items with ``add``/``add_conversations``, then ``freeze()`` (``check``
    freezes on first use); ``dataprep.dedup.load_evals`` loads eval sets from anything ``normalize`` reads."""

    def __init__(self, n: int = CONTAMINATION_N, min_words: int = MIN_WORDS):
        self.n, self.min_words = n, min_words
        self.names: list[str] = []  # eval set names, by index
        self._items: list[tuple[int, int]] = []  # (name index, eval row) by item id
        self._hashes: list[int] = []
        self._owners: list[int] = []
        self._lengths: set[int] = set()  # the n-gram lengths indexed (n, and shorter whole items)
        self.items = 0
        self.skipped_short = 0
        self._keys: np.ndarray | None = None
        self._ids: np.ndarray | None = None

    def add(self, eval_name: str, eval_row: int, text: str | Sequence[str]) -> None:
        """Index one eval item's n-grams. ``text``: one string, or its segments (a question and its answer),
        each indexed on its own: n-grams never span two segments, and a segment of ``min_words`` to ``n - 1``
        words is indexed whole (a 12-word question quoted in a training row is found)."""
        if self._keys is not None:
            raise RuntimeError("Contamination is frozen: add every eval item before the first check")
        segments = [words(t) for t in ([text] if isinstance(text, str) else text)]
        segments = [ws for ws in segments if len(ws) >= self.min_words]
        if not segments:
            self.skipped_short += 1
            return
        if eval_name not in self.names:
            self.names.append(eval_name)
        item = len(self._items)
        self._items.append((self.names.index(eval_name), eval_row))
        for ws in segments:
            k = min(self.n, len(ws))
            self._lengths.add(k)
            for i in range(len(ws) - k + 1):
                self._hashes.append(_h64(" ".join(ws[i : i + k])))
                self._owners.append(item)
        self.items += 1

    def add_conversations(self, eval_name: str, rows: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
        """Index (row, conversation) pairs (what ``pipeline.conversations`` yields) under ``eval_name``: each user
        and assistant message is a segment (see ``add``)."""
        for row, conv in rows:
            msgs = conv.get("messages") or []
            self.add(
                eval_name,
                row,
                [
                    _content_text(m.get("content"))
                    for m in msgs
                    if isinstance(m, Mapping) and m.get("role") in TEXT_ROLES
                ],
            )

    def freeze(self) -> None:
        """Sort the index for lookups (the lists are dropped: 12 bytes per n-gram remain)."""
        if self._keys is not None:
            return
        keys = np.fromiter(self._hashes, dtype=np.uint64, count=len(self._hashes))
        owners = np.fromiter(self._owners, dtype=np.int32, count=len(self._owners))
        order = np.argsort(keys, kind="stable")
        self._keys, self._ids = keys[order], owners[order]
        self._hashes, self._owners = [], []

    @property
    def ngrams(self) -> int:
        self.freeze()
        return len(self._keys)

    def check(self, row: int, conversation: Mapping[str, Any]) -> Hit | None:
        """The first eval item a training conversation shares an n-gram with, or None."""
        return self.check_text(conversation_text(conversation))

    def check_text(self, text: str) -> Hit | None:
        self.freeze()
        if not len(self._keys):
            return None
        ws = words(text)
        for k in sorted(self._lengths, reverse=True):
            if len(ws) < k:
                continue
            grams = [" ".join(ws[i : i + k]) for i in range(len(ws) - k + 1)]
            hs = np.fromiter((_h64(g) for g in grams), dtype=np.uint64, count=len(grams))
            pos = np.searchsorted(self._keys, hs)
            pos[pos == len(self._keys)] = 0
            found = np.flatnonzero(self._keys[pos] == hs)
            if len(found):
                i = int(found[0])
                name, eval_row = self._items[int(self._ids[pos[i]])]
                return Hit(self.names[name], eval_row, grams[i])
        return None


def eval_set_paths(path: str | Path) -> list[tuple[str, Path]]:
    """(name, path) of each eval set under ``path``: the path itself, or each visible file of a folder (a
    ``datasets`` ``save_to_disk`` folder, with its ``dataset_info.json`` or ``dataset_dict.json``, is one set)."""
    p = Path(path)
    if p.is_dir() and not any(
        (p / f).exists() for f in ("dataset_info.json", "dataset_dict.json", "state.json")
    ):
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        return [(f.name, f) for f in files]
    return [(p.name, p)]


__all__ = [
    "BANDS",
    "CONTAMINATION_N",
    "Contamination",
    "Hit",
    "MIN_WORDS",
    "Match",
    "NGRAM",
    "NUM_PERM",
    "NearDup",
    "THRESHOLD",
    "conversation_text",
    "eval_set_paths",
    "shingles",
    "words",
]
