"""dataprep against the real trainer: AutoModel's own ChatDataset, row by row.

Runs only where ``nemo_automodel`` imports (``make conformance``, and CI: ``.ci/run`` builds ``.venv-automodel``
with nemo-automodel 0.7.0 on a CPU torch and runs ``pytest -m automodel`` in it). Every fixture dataset x every
fixture tokenizer (x the tokenizers in ../shared/real when present), with and without truncation, with and
without ``mask_generation_prompt``: ChatDataset is built exactly as a recipe builds it
(``NeMoAutoTokenizer.from_pretrained`` + ``ChatDatasetConfig(...).build(tokenizer=...)``) and each row is read.
Where AutoModel returns a sample, dataprep's total and supervised tokens must equal the sample's; where it
raises, dataprep must report the row under an error code. The agreement table goes to
``$DATAPREP_CONFORMANCE_OUT`` (JSON) when set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.automodel

am = pytest.importorskip(
    "nemo_automodel", reason="nemo-automodel is not installed (make conformance runs it)"
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
REAL = ROOT.parent / "shared" / "real" / "tokenizers"

DATASETS = sorted(
    [p for p in (FIXTURES / "golden").glob("*.jsonl") if not p.name.endswith(".rejects.jsonl")]
    + [FIXTURES / "data" / "chat.jsonl", FIXTURES / "data" / "trainer_edge.jsonl"]
)
MODELS = sorted(p for p in (FIXTURES / "models").iterdir() if p.is_dir() and p.name != "no-template")
if REAL.is_dir():
    MODELS += sorted(p for p in REAL.iterdir() if p.is_dir())
TRUNCATE_AT = 40  # short enough to cut many fixture rows

_RESULTS: list[dict] = []


def _automodel_rows(model_dir: Path, data: Path, *, seq_length: int | None, mgp: bool) -> list[tuple]:
    """Per row: ("ok", input_ids length, supervised labels) or ("raises", message), from AutoModel itself."""
    from nemo_automodel import NeMoAutoTokenizer
    from nemo_automodel.components.datasets.llm.chat_dataset import ChatDatasetConfig

    tok = NeMoAutoTokenizer.from_pretrained(str(model_dir))
    cfg = ChatDatasetConfig(
        path_or_dataset_id=str(data),
        seq_length=seq_length,
        truncation=True if seq_length else "do_not_truncate",
        mask_generation_prompt=mgp,
    )
    ds = cfg.build(tokenizer=tok)
    out = []
    for i in range(len(ds)):
        try:
            s = ds[i]
        except Exception as e:  # noqa: BLE001 - whatever the trainer raises is what we compare
            out.append(("raises", f"{type(e).__name__}: {str(e)[:120]}"))
            continue
        out.append(("ok", len(s["input_ids"]), sum(1 for x in s["labels"] if x != -100)))
    return out


def _dataprep_rows(model_dir: Path, data: Path, *, seq_length: int | None, mgp: bool) -> list[tuple]:
    from dataprep.measure import measure_conversations
    from dataprep.tokenizer import load_tokenizer

    loaded = load_tokenizer(str(model_dir))
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    counts = measure_conversations(list(enumerate(rows, start=1)), loaded, mask_generation_prompt=mgp)
    by_row: dict[int, tuple] = {r: ("error", code, msg) for r, code, msg in counts.rejected}
    kept = counts.supervised_kept(seq_length) if seq_length else counts.supervised
    bad = set(counts.unmaskable(seq_length).tolist())
    for k, r in enumerate(counts.rows.tolist()):
        if k in bad:
            by_row[r] = ("error", "mask_unbuildable", "")
            continue
        total = int(counts.total[k])
        n = min(total, seq_length) if seq_length else total
        by_row[r] = ("ok", n - 1, int(kept[k]))
    return [by_row[i] for i in range(1, len(rows) + 1)]


@pytest.mark.parametrize("mgp", [False, True], ids=["default", "mask_generation_prompt"])
@pytest.mark.parametrize("seq_length", [None, TRUNCATE_AT], ids=["untruncated", f"truncate{TRUNCATE_AT}"])
@pytest.mark.parametrize("model_dir", MODELS, ids=lambda p: p.name)
def test_rows_agree_with_chat_dataset(model_dir, seq_length, mgp):
    mismatches = []
    for data in DATASETS:
        theirs = _automodel_rows(model_dir, data, seq_length=seq_length, mgp=mgp)
        ours = _dataprep_rows(model_dir, data, seq_length=seq_length, mgp=mgp)
        agree_total = agree_sup = raised = flagged = samples = 0
        for row, (t, o) in enumerate(zip(theirs, ours, strict=True), start=1):
            if t[0] == "raises":
                raised += 1
                if o[0] == "error":
                    flagged += 1
                else:
                    mismatches.append(
                        f"{data.name} row {row}: AutoModel raises ({t[1]}); dataprep measured {o}"
                    )
                continue
            samples += 1
            if o[0] != "ok":
                mismatches.append(f"{data.name} row {row}: AutoModel trains it {t}; dataprep says {o}")
                continue
            agree_total += t[1] == o[1]
            agree_sup += t[2] == o[2]
            if t[1:] != o[1:]:
                mismatches.append(
                    f"{data.name} row {row}: AutoModel (len, supervised) {t[1:]} vs dataprep {o[1:]}"
                )
        _RESULTS.append(
            {
                "model": model_dir.name,
                "data": data.name,
                "seq_length": seq_length,
                "mask_generation_prompt": mgp,
                "rows": len(theirs),
                "samples": samples,
                "total_agree": agree_total,
                "supervised_agree": agree_sup,
                "raised": raised,
                "raised_flagged": flagged,
            }
        )
    assert not mismatches, "\n".join(mismatches[:40])


def teardown_module(module):
    out = os.environ.get("DATAPREP_CONFORMANCE_OUT")
    if out and _RESULTS:
        Path(out).write_text(json.dumps(_RESULTS, indent=1), encoding="utf-8")


# -- what preflight writes, through AutoModel's own config path ---------------------------------------------------
def _automodel_config(argv: list[str]):
    from nemo_automodel.components.config._arg_parser import parse_args_and_load_config
    from nemo_automodel.recipes._typed_config import RecipeConfig

    return RecipeConfig(parse_args_and_load_config(argv=argv))


def _one_batch(rc, loader) -> dict:
    from nemo_automodel.recipes.llm.train_ft import _build_tokenizer

    _, tok = _build_tokenizer(rc.model, rc.dataset)
    batch = next(iter(loader.build(tokenizer=tok, dp_rank=0, dp_world_size=1, supports_seq_lens=False)))
    return {k: v for k, v in batch.items() if hasattr(v, "shape")}


@pytest.mark.parametrize("model", ["chatml", "chatml-gen", "think-strip-gen"])
def test_preflight_overrides_load_and_draw_a_batch(tmp_path, model, capsys):
    """overrides.yaml as the recipe file, and the printed command line over a bare recipe, both load through
    parse_args_and_load_config + RecipeConfig and give a dataloader that yields a batch within seq_length."""
    import shlex
    import subprocess
    import sys

    import yaml

    out = tmp_path / "prep"
    r = subprocess.run(
        [sys.executable, "-m", "dataprep", "preflight", "--model", str(FIXTURES / "models" / model),
         "--dataset", str(FIXTURES / "golden" / "openai_messages.jsonl"), "--method", "lora", "--gpus", "1",
         "--gpu-memory", "80GiB", "--val-fraction", "0.3", "--out", str(out), "--quiet"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    overrides = yaml.safe_load((out / "overrides.yaml").read_text())
    tagged = model != "chatml"
    assert overrides["dataset"].get("mask_generation_prompt", False) is (not tagged)
    seq = overrides["dataset"]["seq_length"]

    from_yaml = _automodel_config(["--config", str(out / "overrides.yaml")])
    line = next(
        ln for ln in (out / "overrides.yaml").read_text().splitlines() if ln.startswith("# automodel ")
    )
    args = shlex.split(line[len("# automodel ") :])[1:]  # drop RECIPE.yaml
    bare = tmp_path / "bare.yaml"
    bare.write_text("seed: 1\n")
    from_cli = _automodel_config(["--config", str(bare), *args])
    assert from_cli.to_dict() | {"seed": None} == from_yaml.to_dict() | {"seed": None}
    for rc in (from_yaml, from_cli):
        batch = _one_batch(rc, rc.dataloader)
        assert batch["input_ids"].shape[1] <= seq and (batch["labels"] != -100).any()
        for loader in rc.validation_dataloaders.values():
            assert (_one_batch(rc, loader)["labels"] != -100).any()


# -- stats --trainer-check: the installed AutoModel against dataprep's model ---------------------------------------
@pytest.mark.parametrize("model", ["chatml", "think-strip", "mistral-like", "no-system"])
def test_stats_trainer_check_agrees(cli, model):
    r = cli("stats", FIXTURES / "data" / "trainer_edge.jsonl", "--format", "openai_messages",
            "--model", FIXTURES / "models" / model, "--trainer-check", "50", "--json")  # fmt: skip
    d = r.json()
    tc = d["trainer_check"]
    assert tc["automodel_version"] == "0.7.0" and tc["rows_checked"] >= 8
    assert tc["agree"] == tc["rows_checked"], tc["disagreements"]
    assert "trainer_model_mismatch" not in {f["code"] for f in d["findings"]}


# -- preflight --recipe: recipe.yaml through AutoModel's own config path ------------------------------------------
STOCK_RECIPES = ROOT.parent / "shared" / "automodel" / "recipes"
FIXTURE_RECIPES = ["base", "stale_keys", "seq_no_truncation", "batch_not_divisible", "peft_conflict",
                   "packing_conflict", "implicit_precision", "inline_template"]  # fmt: skip
RECIPE_CASES = [pytest.param(FIXTURES / "recipes" / f"{n}.yaml", id=n) for n in FIXTURE_RECIPES] + [
    pytest.param(p, id=p.stem) for p in sorted(STOCK_RECIPES.glob("*.yaml"))
]


@pytest.mark.parametrize("recipe", RECIPE_CASES)
def test_recipe_yaml_loads_and_draws_a_batch(tmp_path, recipe, monkeypatch):
    """recipe.yaml loads through parse_args_and_load_config + RecipeConfig, builds its dataloaders (one batch
    each, within seq_length, with supervised labels), its peft section instantiates and passes LoRA's module
    matcher, the step scheduler accepts its batch sizes; the printed command line over the ORIGINAL recipe gives
    the same config. Stock recipes (../shared, their source noted there) get a fixture model and dataset."""
    import shlex
    import subprocess
    import sys

    from nemo_automodel.components._peft.module_matcher import ModuleMatcher
    from nemo_automodel.recipes._dist_utils import parse_distributed_section

    monkeypatch.setenv("DATAPREP_FIXTURES", str(FIXTURES))
    stock = recipe.parent == STOCK_RECIPES
    gpus = 4 if recipe.stem == "inline_template" else 1
    out = tmp_path / "prep"
    args = [sys.executable, "-m", "dataprep", "preflight", "--recipe", str(recipe), "--out", str(out),
            "--val-fraction", "0.3", "--gpus", str(gpus), "--quiet"]  # fmt: skip
    if stock:
        # sharegpt.jsonl: multi-turn without reasoning_content (the stock inline Llama template drops reasoning,
        # which preflight rightly stops on when the data carries it)
        args += ["--model", str(FIXTURES / "models" / "chatml"),
                 "--dataset", str(FIXTURES / "golden" / "sharegpt.jsonl")]  # fmt: skip
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    rc = _automodel_config(["--config", str(out / "recipe.yaml")])
    seq = rc.get("dataset.seq_length")
    batch = _one_batch(rc, rc.dataloader)
    assert batch["input_ids"].shape[1] <= seq and (batch["labels"] != -100).any()
    for loader in rc.validation_dataloaders.values():
        assert (_one_batch(rc, loader)["labels"] != -100).any()
    if rc.get("peft") is not None:
        peft = rc.peft.instantiate()
        ModuleMatcher(peft.target_modules, peft.exclude_modules, peft.match_all_linear, is_causal_lm=True)
    assert rc.step_scheduler is not None and rc.loss_fn is not None
    dist = parse_distributed_section(rc.get("distributed").to_dict())
    dp = gpus // (dist["tp_size"] * dist["cp_size"] * dist["pp_size"])
    lbs, gbs = rc.get("step_scheduler.local_batch_size"), rc.get("step_scheduler.global_batch_size")
    assert gbs % (lbs * dp) == 0
    assert isinstance(rc.get("model.torch_dtype"), str)
    line = report["recipe"]["command_line"]
    assert line, report["recipe"]["not_on_command_line"]
    cli_args = shlex.split(line)[2:]
    from_cli = _automodel_config(["--config", str(recipe), *cli_args])
    assert from_cli.to_dict() == rc.to_dict()
