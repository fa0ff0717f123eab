"""Find a Hugging Face dataset id in the local caches, offline; never import ``datasets`` or reach the network.

Two caches can hold a dataset:

- the hub cache (``huggingface-cli download --repo-type dataset ID``):
  ``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``, laid out as
  ``datasets--OWNER--NAME/snapshots/<revision>/<the repository's files>`` with ``refs/main`` naming the revision;
- the ``datasets`` cache (``load_dataset(ID)``): ``$HF_DATASETS_CACHE`` or ``$HF_HOME/datasets``, laid out as
  ``OWNER___NAME/<config>/<version>/<hash>/NAME-<split>[-0000N-of-0000M].arrow``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UnreadableInput

_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
# Files in a dataset repository that are not data.
_NOT_DATA = re.compile(
    r"(^|/)(\.|README|LICENSE|CITATION)|\.(md|py|lock|txt|gitattributes|yaml|yml|png|jpg)$", re.I
)


def looks_like_hub_id(s: str) -> bool:
    return bool(_ID.match(s)) and not s.endswith(
        (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".arrow", ".gz")
    )


def _home() -> Path:
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")


def hub_cache_dir() -> Path:
    return Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or _home() / "hub")


def datasets_cache_dir() -> Path:
    return Path(os.environ.get("HF_DATASETS_CACHE") or _home() / "datasets")


@dataclass(frozen=True)
class HubDataset:
    """Where a dataset id was found: the data files of one split, and which cache held them."""

    repo_id: str
    files: list[Path]
    cache: str  # "hub" | "datasets"
    root: Path
    split: str | None = None
    detail: dict[str, str] = field(default_factory=dict)


def _split_files(files: list[tuple[str, Path]], split: str) -> list[Path]:
    token = re.compile(rf"(^|[/_.-]){re.escape(split)}([/_.-]|$)")
    chosen = [p for rel, p in files if token.search(rel)]
    return chosen or [p for _, p in files]


def _from_hub_cache(repo_id: str, split: str) -> HubDataset | None:
    repo_dir = hub_cache_dir() / ("datasets--" + repo_id.replace("/", "--"))
    snaps = repo_dir / "snapshots"
    if not snaps.is_dir():
        return None
    snapshot = None
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        rev = ref.read_text().strip()
        if (snaps / rev).is_dir():
            snapshot = snaps / rev
    if snapshot is None:
        candidates = sorted((p for p in snaps.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        if not candidates:
            return None
        snapshot = candidates[-1]
    files = [
        (str(p.relative_to(snapshot)), p)
        for p in sorted(snapshot.rglob("*"))
        if p.is_file() and not _NOT_DATA.search(str(p.relative_to(snapshot)))
    ]
    if not files:
        return None
    return HubDataset(
        repo_id, _split_files(files, split), "hub", snapshot, split, {"revision": snapshot.name}
    )


def _from_datasets_cache(repo_id: str, split: str) -> HubDataset | None:
    base = datasets_cache_dir() / repo_id.replace("/", "___")
    if not base.is_dir():
        return None
    name = repo_id.rsplit("/", 1)[-1]
    shards = list(base.glob(f"*/*/*/{name}-{split}.arrow")) + list(
        base.glob(f"*/*/*/{name}-{split}-*-of-*.arrow")
    )
    if not shards:
        return None
    newest = max({p.parent for p in shards}, key=lambda d: d.stat().st_mtime)
    chosen = sorted(p for p in shards if p.parent == newest)
    return HubDataset(repo_id, chosen, "datasets", newest, split)


def resolve_hub_dataset(repo_id: str, split: str = "train") -> HubDataset:
    """The local files of ``repo_id``'s split; UnreadableInput naming both caches when it is in neither."""
    found = _from_hub_cache(repo_id, split) or _from_datasets_cache(repo_id, split)
    if found is None:
        raise UnreadableInput(
            repo_id,
            f"no such file or directory, and no dataset of that id in the local Hugging Face cache "
            f"(looked in {hub_cache_dir()} and {datasets_cache_dir()})",
            hint="check the path, or download the dataset first: huggingface-cli download --repo-type dataset ID",
        )
    return found
