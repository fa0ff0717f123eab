"""The types every reader yields, so converters work on one shape whatever the input format was."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class RowError:
    """An input row that could not be parsed; it goes to the rejects file, never silently dropped."""

    row: int  # 1-based row number in the input (for line-based text: the line number)
    code: str  # a catalogued row code, e.g. "invalid_json"
    message: str
    raw: str | None = None  # the original text of the row, cut to a sane length


@dataclass
class Batch:
    """A run of consecutive input records.

    ``table`` is set when the records fit one Arrow schema (the fast, vectorized path); otherwise only
    ``records`` is. ``rows`` gives each record's 1-based input row number; when ``None`` the records are
    contiguous from ``start``. ``errors`` are rows in this stretch of input that could not be parsed.
    """

    start: int
    table: pa.Table | None = None
    _records: list[dict[str, Any]] | None = None
    rows: list[int] | None = None
    errors: list[RowError] = field(default_factory=list)

    def __len__(self) -> int:
        if self.table is not None:
            return self.table.num_rows
        return len(self._records or [])

    def records(self) -> list[dict[str, Any]]:
        if self._records is None:
            self._records = self.table.to_pylist() if self.table is not None else []
        return self._records

    def row_numbers(self) -> list[int]:
        return self.rows if self.rows is not None else list(range(self.start, self.start + len(self)))

    @classmethod
    def from_records(cls, records: list[dict[str, Any]], start: int = 1, **kw: Any) -> Batch:
        return cls(start=start, _records=records, **kw)


def iter_records(batches: Iterator[Batch]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, record) pairs, for code that has no use for batches."""
    for b in batches:
        yield from zip(b.row_numbers(), b.records(), strict=True)
