"""Defaults that more than one command shows: one place, so stats, preflight and their --help agree."""

from __future__ import annotations

DEFAULT_SEQ_LENGTHS: tuple[int, ...] = (512, 1024, 2048, 4096, 8192)  # the truncation table's candidates
DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16)  # the padding table's micro-batch sizes
# the micro-batch sizes plan measures a dataset for
PLAN_BATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
