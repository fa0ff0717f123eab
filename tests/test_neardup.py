"""Near-duplicate detection (``dataprep.neardup``), ``normalize --dedup near`` and eval contamination."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataprep.dedup import load_evals
from dataprep.neardup import Contamination, NearDup, conversation_text, eval_set_paths
from dataprep.pipeline import conversations

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "data" / "neardup"
TRUTH = json.loads((FIX / "truth.json").read_text(encoding="utf-8"))

ANSWER = (
    "Photosynthesis converts light energy into chemical energy. Plants use chlorophyll in their leaves to capture "
    "sunlight, then combine water drawn up by the roots with carbon dioxide from the air, producing glucose and "
    "releasing oxygen. It matters for 3 reasons: it feeds nearly every food chain on land and in the sea, it "
    "releases the oxygen animals breathe, and it stores carbon that would otherwise warm the planet."
)


def conv(user: str, assistant: str, system: str | None = None) -> dict:
    msgs = [{"role": "system", "content": system}] if system else []
    return {
        "messages": [*msgs, {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    }


def test_conversation_text_is_user_and_assistant_content_only():
    c = conv("Q?", [{"type": "text", "text": "A."}], system="You are terse.")  # content parts too
    assert conversation_text(c) == "Q?\nA."


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.replace("3 reasons", "4 reasons"),  # a changed number
        lambda t: t.replace(" ", "  ").replace(",", " ,").replace(".", "!"),  # whitespace and punctuation
        lambda t: t.replace("nearly", "almost"),  # a word
        lambda t: t.upper(),  # case
    ],
    ids=["number", "whitespace_punctuation", "word", "case"],
)
def test_edited_copy_is_a_near_duplicate_of_the_first(edit):
    d = NearDup()
    assert d.check(1, conv("How does photosynthesis work?", ANSWER)) is None
    assert d.check(2, conv("How does photosynthesis work?", edit(ANSWER))) == 1
    assert d.last is not None and d.last.jaccard >= 0.7
    assert d.kept == 1  # the duplicate is not indexed


def test_different_conversations_are_not_near_duplicates():
    d = NearDup()
    assert d.check(1, conv("How does photosynthesis work?", ANSWER)) is None
    other = (
        "Volcanoes form where molten rock rises through the crust. Pressure from gas dissolved in the magma drives "
        "eruptions, and the shape of the cone depends on how runny the lava is and how much ash is thrown out."
    )
    assert d.check(2, conv("How do volcanoes form?", other)) is None
    # same topic, same question, a different answer: not a duplicate either
    assert (
        d.check(3, conv("How does photosynthesis work?", "Plants make sugar from light, water and CO2."))
        is None
    )
    # a shared system prompt does not make rows alike
    assert d.check(4, conv("Hi", "Hello!", system=ANSWER)) is None
    assert d.kept == 4


def test_the_system_prompt_is_not_compared():
    d = NearDup()
    assert d.check(1, conv("How does photosynthesis work?", ANSWER, system="Be brief.")) is None
    assert d.check(2, conv("How does photosynthesis work?", ANSWER, system="Be verbose and kind.")) == 1


def test_find_does_not_index():
    d = NearDup()
    assert d.check(7, conv("How does photosynthesis work?", ANSWER)) is None
    val = conv("How does photosynthesis work?", ANSWER.replace("nearly", "almost"))
    m = d.find(val)
    assert m is not None and m.row == 7 and 0.7 <= m.jaccard < 1
    assert d.find(conv("How do volcanoes form?", "Magma rises through cracks in the crust.")) is None
    assert d.kept == 1


def test_row_without_text_is_neither_kept_nor_a_duplicate():
    d = NearDup()
    assert d.check(1, {"messages": [{"role": "user", "content": "!!!"}]}) is None
    assert d.check(2, {"messages": [{"role": "user", "content": "???"}]}) is None
    assert d.kept == 0


def test_a_cluster_points_at_its_first_row():
    d = NearDup()
    base = conv("How does photosynthesis work?", ANSWER)
    assert [d.check(i, base) for i in (5, 9, 11)] == [None, 5, 5]


words_st = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8), min_size=1, max_size=60
)


@given(a=words_st, b=words_st)
def test_identical_rows_are_always_detected(a, b):
    d = NearDup()
    first = conv(" ".join(a), " ".join(b))
    assert d.check(1, first) is None
    assert d.check(2, json.loads(json.dumps(first))) == 1


def test_fixture_near_duplicates_are_found_exactly():
    d = NearDup()
    found = {}
    for row, c in conversations(FIX / "train.jsonl"):
        of = d.check(row, c)
        if of is not None:
            found[str(row)] = of
    # near copies and the exact copy (the detector alone sees it as J = 1), nothing else
    assert found == {**TRUTH["near"], **TRUTH["exact"]}


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        NearDup(threshold=0)
    with pytest.raises(ValueError):
        NearDup(num_perm=100, bands=16)


# -- normalize --dedup near ---------------------------------------------------------------------------------


def _rejects(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_normalize_dedup_near_rejects_name_the_row_and_counts_reconcile(cli, tmp_path):
    out = tmp_path / "o.jsonl"
    r = cli("normalize", FIX / "train.jsonl", out, "--dedup", "near", "--json")
    assert r.exit_code == 0, r
    counts = r.json()["counts"]
    assert counts == {
        "read": 40,
        "written": 40 - len(TRUTH["near"]) - len(TRUTH["exact"]),
        "rejected": len(TRUTH["near"]),
        "duplicates": len(TRUTH["exact"]),  # exact copies stay exact duplicates
        "records_read": 40,
        "rejected_by_code": {"near_duplicate": len(TRUTH["near"])},
    }
    assert r.json()["reconciled"]
    rej = _rejects(tmp_path / "o.rejects.jsonl")
    assert {str(x["row"]): x["code"] for x in rej} == dict.fromkeys(TRUTH["near"], "near_duplicate")
    for x in rej:
        assert f"near duplicate of row {TRUTH['near'][str(x['row'])]} " in x["message"]
        assert x["record"]["messages"]  # the rejected conversation, to review
    f = {x["code"]: x for x in r.json()["findings"]}
    assert f["near_duplicate"]["severity"] == "warning"
    assert f["near_duplicate"]["rows"] == sorted(int(k) for k in TRUTH["near"])
    assert len(out.read_text(encoding="utf-8").splitlines()) == counts["written"]


@pytest.mark.parametrize("flags", [("--dedup",), ("--dedup", "exact"), ("--dedup=exact",)])
def test_exact_dedup_is_unchanged(cli, tmp_path, flags):
    r = cli("normalize", FIX / "train.jsonl", tmp_path / "o.jsonl", *flags, "--json")
    assert r.exit_code == 0, r
    c = r.json()["counts"]
    assert (c["written"], c["rejected"], c["duplicates"]) == (39, 0, 1)
    assert (tmp_path / "o.rejects.jsonl").read_text(encoding="utf-8") == ""


def test_bare_dedup_before_the_arguments_stays_a_flag(cli, tmp_path):
    r = cli("normalize", "--dedup", FIX / "train.jsonl", tmp_path / "o.jsonl", "--json")
    assert r.exit_code == 0, r
    assert r.json()["counts"]["duplicates"] == 1


def test_no_dedup_keeps_every_row(cli, tmp_path):
    r = cli("normalize", FIX / "train.jsonl", tmp_path / "o.jsonl", "--json")
    assert r.json()["counts"]["written"] == 40


def test_dedup_near_is_refused_on_ray(cli, tmp_path):
    r = cli("normalize", FIX / "train.jsonl", tmp_path / "o", "--dedup", "near", "--engine", "ray", "--json")
    assert r.exit_code == 2, r
    assert "--dedup near is not available with --engine ray" in r.stdout + r.stderr
    assert not (tmp_path / "o").exists()


def test_normalize_library_refuses_an_unknown_mode(tmp_path):
    from dataprep.errors import UsageError
    from dataprep.normalize import normalize

    with pytest.raises(UsageError):
        normalize(FIX / "train.jsonl", tmp_path / "o.jsonl", dedup="fuzzy")


# -- contamination ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evals() -> Contamination:
    return load_evals([FIX / "evals"])


def test_eval_folder_is_one_set_per_file(evals):
    assert [n for n, _ in eval_set_paths(FIX / "evals")] == ["chat.jsonl", "qa.jsonl"]
    assert sorted(evals.names) == ["chat.jsonl", "qa.jsonl"]
    assert (evals.items, evals.skipped_short) == (7, 1)  # "What is two plus two?" is too short to index


def test_contamination_fires_on_the_fixture_row_and_only_there(evals):
    hits = {}
    for row, c in conversations(FIX / "train.jsonl"):
        h = evals.check(row, c)
        if h is not None:
            hits[str(row)] = [h.eval_name, h.eval_row]
    assert hits == TRUTH["contaminated"]


def test_a_13_gram_of_an_eval_answer_fires(evals):
    text = "Sure. Air molecules SCATTER short blue wavelengths of sunlight, far more than the long red ones, you see."
    name, row, ngram = evals.check(1, conv("Why?", text))
    assert (name, row) == ("chat.jsonl", 2)
    assert len(ngram.split()) == 13 and ngram.startswith("air molecules scatter")


def test_twelve_words_of_a_long_eval_message_do_not_fire(evals):
    # 12 consecutive words of a 15-word answer: under the 13-gram rule
    text = "air molecules scatter short blue wavelengths of sunlight far more than the"
    assert evals.check(1, conv("x", text)) is None


def test_contamination_is_silent_on_clean_rows(evals):
    assert evals.check(1, conv("How does photosynthesis work?", ANSWER)) is None
    assert evals.check(2, conv("What is two plus two?", "Four.")) is None  # the short item is not indexed


def test_contamination_is_frozen_after_the_first_check():
    c = Contamination()
    c.add("e", 1, "one two three four five six seven eight nine ten eleven twelve thirteen fourteen")
    assert c.check(
        1, conv("q", "two three four five six seven eight nine ten eleven twelve thirteen fourteen")
    )
    with pytest.raises(RuntimeError):
        c.add("e", 2, "more text")
