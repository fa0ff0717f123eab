"""The distribution math on hand-made distributions, and compute_stats end to end on a fixture tokenizer."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataprep.measure import TokenCounts
from dataprep.stats import (
    RECOMMENDATION_RULE,
    compute_stats,
    expected_max_of_sample,
    ffd_pack_count,
    grouped_padded_tokens,
    histogram,
    packing_table,
    padding_table,
    recommend_seq_length,
    reservoir_sample,
    stats_from_counts,
    summarize,
    truncation_table,
)

MODELS = Path(__file__).resolve().parent.parent / "fixtures" / "models"
lengths_st = st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=60)


def ffd_reference(lengths: list[int], capacity: int) -> int:
    """First-fit decreasing, one item at a time, the textbook way."""
    packs: list[int] = []
    for x in sorted((min(v, capacity) for v in lengths if v > 0), reverse=True):
        for i, room in enumerate(packs):
            if room >= x:
                packs[i] -= x
                break
        else:
            packs.append(capacity - x)
    return len(packs)


# -- distribution -----------------------------------------------------------------------------------------------
@given(lengths_st)
def test_summary_percentiles_are_numpy_observed_values(xs):
    s = summarize(np.asarray(xs, dtype=np.int32))
    arr = np.asarray(xs)
    assert s["count"] == len(xs) and s["min"] == min(xs) and s["max"] == max(xs) and s["sum"] == sum(xs)
    assert s["mean"] == pytest.approx(arr.mean(), abs=0.01)
    for q in (50, 90, 95, 99):
        assert s[f"p{q}"] == int(np.percentile(arr, q, method="inverted_cdf"))
        # an observed value that at least q% of rows do not exceed, and the smallest such
        assert s[f"p{q}"] in xs
        assert (arr <= s[f"p{q}"]).mean() >= q / 100
        assert (arr < s[f"p{q}"]).mean() < q / 100


def test_summary_by_hand():
    s = summarize(np.arange(1, 101))
    assert (s["p50"], s["p90"], s["p95"], s["p99"], s["max"], s["mean"]) == (50, 90, 95, 99, 100, 50.5)
    assert summarize(np.zeros(0))["count"] == 0


@given(lengths_st)
def test_histogram_counts_every_row_in_its_bin(xs):
    h = histogram(np.asarray(xs), np.asarray(xs) // 2)
    edges, counts = h["edges"], h["counts"]
    assert sum(counts) == len(xs) and sum(h["supervised_counts"]) == len(xs)
    assert len(edges) == len(counts) + 1 and len(counts) <= 31
    for x in xs:
        i = next(k for k in range(len(counts)) if edges[k] <= x < edges[k + 1])
        assert counts[i] > 0


# -- truncation -------------------------------------------------------------------------------------------------
def test_truncation_table_by_hand():
    # row 1: 100 tokens, answer in [60, 100); row 2: 600 tokens, answer [550, 600); row 3: 1200 tokens, two
    # answers [100, 200) and [1000, 1200); row 4: 300 tokens, no supervised token at all.
    counts = TokenCounts.from_lists(
        [100, 600, 1200, 300],
        [40, 50, 300, 0],
        runs=[(0, 60, 100), (1, 550, 600), (2, 100, 200), (2, 1000, 1200)],
    )
    at512, at1024 = truncation_table(counts, [512, 1024])
    assert at512.rows_truncated == 2
    assert at512.tokens_lost == (600 - 512) + (1200 - 512)
    assert at512.tokens_lost_pct == pytest.approx(100 * 776 / 2200, abs=1e-3)
    assert at512.rows_losing_all_supervision == 1  # row 2; row 3 keeps its first answer; row 4 had none
    assert at512.supervised_tokens_lost == 50 + 200
    assert at1024.rows_truncated == 1 and at1024.tokens_lost == 176
    assert at1024.rows_losing_all_supervision == 0
    assert at1024.supervised_tokens_lost == 176
    assert at1024.supervised_tokens_lost_pct == pytest.approx(100 * 176 / 390, abs=1e-3)


@given(
    st.lists(st.tuples(st.integers(1, 3000), st.integers(0, 3000)), min_size=1, max_size=40),
    st.integers(1, 4000),
)
def test_truncation_of_trailing_answers(rows, L):
    # Single-turn rows: the supervised tokens are the last ones.
    total = [t for t, _ in rows]
    sup = [min(s, t) for t, s in rows]
    counts = TokenCounts.from_lists(total, sup)
    (row,) = truncation_table(counts, [L])
    kept = [max(0, min(t, L) - (t - s)) for t, s in zip(total, sup, strict=True)]
    assert row.rows_truncated == sum(t > L for t in total)
    assert row.tokens_lost == sum(max(0, t - L) for t in total)
    assert row.supervised_tokens_lost == sum(sup) - sum(kept)
    assert row.rows_losing_all_supervision == sum(s > 0 and k == 0 for s, k in zip(sup, kept, strict=True))


# -- padding ----------------------------------------------------------------------------------------------------
@settings(max_examples=150)
@given(st.lists(st.integers(1, 1000), min_size=1, max_size=8), st.integers(1, 10))
def test_expected_max_equals_brute_force_over_all_batches(xs, b):
    if b >= len(xs):
        expected = max(xs)
    else:
        expected = float(np.mean([max(c) for c in itertools.combinations(xs, b)]))
    assert expected_max_of_sample(np.asarray(xs), b) == pytest.approx(expected, rel=1e-9)


def test_expected_max_on_a_large_sample_matches_simulation():
    rng = np.random.default_rng(0)
    xs = rng.integers(1, 4000, 5000)
    sim = np.mean([xs[rng.choice(xs.size, 8, replace=False)].max() for _ in range(20000)])
    assert expected_max_of_sample(xs, 8) == pytest.approx(sim, rel=0.01)


def test_padding_by_hand():
    xs = np.array([10, 20, 30, 40])
    assert grouped_padded_tokens(xs, 2) == 2 * 20 + 2 * 40
    assert grouped_padded_tokens(xs, 3) == 3 * 30 + 1 * 40
    b1, b2, b4 = padding_table(xs, [1, 2, 4], seq_lengths=[25])
    assert b1.random_efficiency == 1.0 and b1.grouped_efficiency == 1.0 and b1.expected_max_len_random == 25.0
    # pairs: (10,20)->20 (10,30)->30 (10,40)->40 (20,30)->30 (20,40)->40 (30,40)->40: E[max] = 200/6
    assert b2.expected_max_len_random == pytest.approx(200 / 6, abs=0.01)
    assert b2.random_efficiency == pytest.approx(25 / (200 / 6), abs=1e-4)
    assert b2.grouped_efficiency == pytest.approx(100 / 120, abs=1e-4)
    assert b4.expected_max_len_random == 40 and b4.random_efficiency == pytest.approx(25 / 40)
    # capped at 25: lengths 10, 20, 25, 25
    (cap,) = b2.capped
    assert cap["seq_length"] == 25
    assert cap["expected_max_len_random"] == pytest.approx((20 + 25 + 25 + 25 + 25 + 25) / 6, abs=0.01)


@given(lengths_st, st.integers(1, 16))
def test_grouped_batches_pad_no_more_than_random_ones(xs, b):
    (row,) = padding_table(np.asarray(xs), [b])
    assert 0 < row.random_efficiency <= row.grouped_efficiency + 1e-9 <= 1 + 1e-9


# -- packing ----------------------------------------------------------------------------------------------------
def test_ffd_by_hand():
    assert ffd_pack_count(np.array([6, 5, 4, 3, 2]), 10) == 2  # 6+4, 5+3+2
    assert ffd_pack_count(np.array([7, 7, 7]), 10) == 3
    assert ffd_pack_count(np.array([3] * 10), 10) == 4  # 3 per pack
    assert ffd_pack_count(np.array([25, 5]), 10) == 2  # the long row counts as truncated to 10
    (row,) = packing_table(np.array([6, 5, 4, 3, 2]), [10])
    assert (row.packs, row.efficiency, row.rows_truncated) == (2, 1.0, 0)


@settings(max_examples=300)
@given(st.lists(st.integers(0, 120), max_size=80), st.integers(1, 100))
def test_ffd_equals_the_textbook_algorithm(xs, capacity):
    assert ffd_pack_count(np.asarray(xs, dtype=np.int64), capacity) == ffd_reference(xs, capacity)


def test_ffd_is_fast_for_a_million_rows():
    xs = np.random.default_rng(0).lognormal(5.5, 0.8, 1_000_000).astype(np.int64) + 1
    (row,) = packing_table(xs, [2048])
    assert row.packs >= int(np.minimum(xs, 2048).sum()) // 2048
    assert 0.95 < row.efficiency <= 1.0


# -- recommendation and findings --------------------------------------------------------------------------------
def test_recommendation_covers_p99_in_multiples_of_256():
    counts = TokenCounts.from_lists([300] * 99 + [5000])
    assert recommend_seq_length(counts) == 512  # p99 = 300: the single long row does not drive it


def test_recommendation_comes_from_the_distribution_not_one_row():
    # one row in 100 answers from token 1500: it does not set the length, it is named instead
    counts = TokenCounts.from_lists([300] * 99 + [1600], [50] * 99 + [100])
    assert recommend_seq_length(counts) == 512
    result = stats_from_counts(counts, seq_lengths=[512])
    assert {f.code: f.rows for f in result.findings}["truncation_drops_answers"] == (100,)
    # two rows in 100 (past p99): the length covers them
    counts = TokenCounts.from_lists([300] * 98 + [1600] * 2, [50] * 98 + [100] * 2)
    assert recommend_seq_length(counts) == 1792
    assert recommend_seq_length(counts, model_max_length=1024) == 1024
    assert "256" in RECOMMENDATION_RULE and "p99" in RECOMMENDATION_RULE


def test_findings_name_the_rows():
    counts = TokenCounts.from_lists(
        [100, 5000, 200, 3000],
        [20, 100, 0, 10],
        rows=[3, 7, 9, 12],
        runs=[(0, 80, 100), (1, 4900, 5000), (3, 5, 15)],
    )
    result = stats_from_counts(counts, seq_lengths=[512, 1024], batch_sizes=[1, 2], model_max_length=4096)
    by_code = {f.code: f for f in result.findings}
    assert by_code["no_supervised_tokens"].rows == (9,)
    assert by_code["no_supervised_tokens"].severity.value == "error"
    assert by_code["exceeds_model_max_length"].rows == (7,)
    # recommended: p99 of total is 5000 -> 4096 after the cap; row 7's answer starts at 4900
    assert result.recommended_seq_length == 4096
    assert by_code["truncation_drops_answers"].rows == (7,)
    d = result.to_dict()
    assert d["recommended_seq_length"] == 4096


def test_to_dict_has_the_documented_keys():
    counts = TokenCounts.from_lists([10, 20, 30], [5, 5, 5])
    d = stats_from_counts(counts, seq_lengths=[16], batch_sizes=[1, 2]).to_dict()
    assert d["rows"] == 3
    for part in ("total", "supervised"):
        assert set(d["tokens"][part]) >= {"count", "mean", "min", "p50", "p90", "p95", "p99", "max"}
    assert set(d["truncation"][0]) >= {
        "seq_length",
        "rows_truncated",
        "rows_losing_all_supervision",
        "tokens_lost_pct",
        "supervised_tokens_lost",
    }
    assert set(d["padding"][0]) >= {
        "batch_size",
        "random_efficiency",
        "grouped_efficiency",
        "expected_max_len_random",
    }
    assert set(d["packing"][0]) >= {"seq_length", "efficiency", "packs"}
    assert {"recommended_seq_length", "mask_source", "histogram", "findings", "turns"} <= set(d)


def test_empty_input_gives_zeros_and_no_recommendation():
    result = stats_from_counts(TokenCounts.from_lists([]), seq_lengths=[512], batch_sizes=[4])
    d = result.to_dict()
    assert d["rows"] == 0 and d["recommended_seq_length"] is None and d["packing"][0]["packs"] == 0


def test_reservoir_sample_is_uniform_seeded_and_in_order():
    items = [(i, {"i": i}) for i in range(1, 1001)]
    sample, n = reservoir_sample(iter(items), 50)
    assert n == 1000 and len(sample) == 50
    assert [r for r, _ in sample] == sorted(r for r, _ in sample)
    assert reservoir_sample(iter(items), 50)[0] == sample
    assert reservoir_sample(iter(items[:10]), 50)[0] == items[:10]


# -- end to end -------------------------------------------------------------------------------------------------
def test_compute_stats_on_a_fixture_tokenizer():
    from test_measure import make_conversations, naive_total

    from dataprep.tokenizer import load_tokenizer

    loaded = load_tokenizer(str(MODELS / "chatml-gen"))
    convs = make_conversations(50, seed=11)
    result = compute_stats(enumerate(convs, 1), loaded, seq_lengths=(64, 128, 256), batch_sizes=(1, 4))
    totals = [naive_total(loaded.tokenizer, c) for c in convs]
    d = result.to_dict()
    assert d["rows"] == 50 and d["mask_source"] == "generation_tags"
    assert d["model_max_length"] == loaded.tokenizer.model_max_length
    assert d["tokens"]["total"]["max"] == max(totals)
    assert d["tokens"]["total"]["p90"] == int(np.percentile(totals, 90, method="inverted_cdf"))
    assert [t["seq_length"] for t in d["truncation"]] == [64, 128, 256]
    assert d["truncation"][0]["rows_truncated"] == sum(t > 64 for t in totals)

    sampled = compute_stats(enumerate(convs, 1), loaded, sample=10, seq_lengths=(256,), batch_sizes=(1,))
    assert sampled.rows == 10 and sampled.rows_read == 50 and sampled.sampled
