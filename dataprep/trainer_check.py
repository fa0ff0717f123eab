"""Re-measure a sample of rows with the AutoModel installed here and compare with dataprep's model of it.

``dataprep.trainer`` models nemo-automodel 0.7.0. A user training with another version learns from
``stats --trainer-check N`` whether the counts still hold: the sampled rows are written to a temporary JSONL and
read by AutoModel's own ChatDataset, built as a recipe builds it (``NeMoAutoTokenizer.from_pretrained`` +
``ChatDatasetConfig(...).build(tokenizer=...)``); per row, the sample's length and supervised labels are compared
with dataprep's, and a row AutoModel raises on must be one dataprep reports as an error. nemo-automodel is never
installed or imported unless asked for; it is heavy (torch).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .findings import Finding, finding
from .measure import TokenCounts
from .trainer import AUTOMODEL_VERSION

MAX_LISTED = 20


@dataclass(frozen=True)
class TrainerCheck:
    automodel_version: str
    rows_checked: int
    agree: int
    disagreements: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "automodel_version": self.automodel_version,
            "modelled_version": AUTOMODEL_VERSION,
            "rows_checked": self.rows_checked,
            "agree": self.agree,
            "disagreements": list(self.disagreements[:MAX_LISTED]),
        }

    def findings(self) -> list[Finding]:
        if not self.disagreements:
            return []
        first = self.disagreements[0]
        return [
            finding(
                "trainer_model_mismatch",
                f"the installed nemo-automodel {self.automodel_version} disagrees with dataprep's model of "
                f"{AUTOMODEL_VERSION} on {len(self.disagreements)} of {self.rows_checked} rows checked "
                f"(row {first['row']}: AutoModel {first['automodel']}, dataprep {first['dataprep']})",
                rows=[d["row"] for d in self.disagreements[:MAX_LISTED]],
                automodel_version=self.automodel_version,
            )
        ]


def installed_automodel() -> str | None:
    """The installed nemo-automodel version, from package metadata (nothing imported)."""
    from importlib import metadata

    try:
        return metadata.version("nemo-automodel")
    except metadata.PackageNotFoundError:
        return None


def _dataprep_view(counts: TokenCounts) -> dict[int, tuple]:
    view: dict[int, tuple] = {r: ("raises", code) for r, code, _ in counts.rejected}
    bad = set(counts.unmaskable().tolist())
    for k, r in enumerate(counts.rows.tolist()):
        if k in bad:
            view[r] = ("raises", "mask_unbuildable")
        else:
            view[r] = ("ok", int(counts.total[k]) - 1, int(counts.supervised[k]))  # input_ids after the shift
    return view


def check_rows(
    rows: list[tuple[int, dict]],
    counts: TokenCounts,
    loaded: Any,
    *,
    mask_generation_prompt: bool = False,
) -> TrainerCheck:
    """Read ``rows`` (row number, conversation) with the installed AutoModel's ChatDataset and compare each with
    dataprep's ``counts`` for that row (untruncated). Raises MissingDependency when nemo-automodel is absent."""
    version = installed_automodel()
    if version is None:
        from .errors import MissingDependency

        raise MissingDependency(
            "$[trainer_check] reads rows with AutoModel's own ChatDataset, and nemo-automodel is not installed here",
            hint="run it in the training environment (pip install nemo-automodel), or drop $[trainer_check]",
        )
    import logging
    import warnings

    from nemo_automodel import NeMoAutoTokenizer
    from nemo_automodel.components.datasets.llm.chat_dataset import ChatDatasetConfig

    ours = _dataprep_view(counts)
    override = loaded.template if str(loaded.template_source or "").startswith("--chat-template") else None
    disagreements: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dataprep-trainer-check-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            path = Path(tmp) / "rows.jsonl"
            path.write_text(
                "".join(json.dumps(c, ensure_ascii=False) + "\n" for _, c in rows), encoding="utf-8"
            )
            tok = NeMoAutoTokenizer.from_pretrained(str(loaded.model_dir))
            ds = ChatDatasetConfig(
                path_or_dataset_id=str(path),
                chat_template=override,
                mask_generation_prompt=mask_generation_prompt,
            ).build(tokenizer=tok)
            for i, (row, _) in enumerate(rows):
                try:
                    s = ds[i]
                    theirs: tuple = ("ok", len(s["input_ids"]), sum(1 for x in s["labels"] if x != -100))
                except Exception as e:  # noqa: BLE001 - what the trainer raises is the answer
                    theirs = ("raises", f"{type(e).__name__}: {str(e)[:160]}")
                mine = ours.get(row, ("absent",))
                same = theirs[0] == mine[0] == "raises" or theirs == mine
                if not same:
                    disagreements.append({"row": row, "automodel": list(theirs), "dataprep": list(mine)})
        finally:
            logging.disable(logging.NOTSET)
    return TrainerCheck(version, len(rows), len(rows) - len(disagreements), tuple(disagreements))
