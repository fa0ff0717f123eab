"""Flat shapes (alpaca, dolly, prompt/completion): one user turn + one answer, built column-wise in polars.

A flat record is a few text columns. ``FlatSpec`` names them; the same spec drives the vectorized path
(polars expressions over an Arrow batch, serialized to JSON lines without a Python dict per row) and the
per-record path (batches without a table, nested columns such as ``history``, or float columns), and both
give byte-identical output, reject codes and messages (a property test checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dataprep.sources.base import Batch

from ._common import Converted, Converter, Reject, RowReject, maybe_json, text_of

# "Blank" must mean what Python's str.strip() means (validate_conversation uses it): Rust's regex \s is
# Unicode White_Space, which Python's isspace() extends with the separators \x1c-\x1f.
BLANK_RE = r"^[\s\x1c-\x1f]*$"


@dataclass(frozen=True)
class FlatSpec:
    """Which columns make the user turn (in order, required or not), the answer, system and history."""

    user: tuple[tuple[str, bool], ...]
    assistant: str
    system: str | None = "system"
    history: str | None = None

    @property
    def columns(self) -> list[str]:
        cols = [c for c, _ in self.user] + [self.assistant]
        return cols + [c for c in (self.system, self.history) if c]


def _history(value: Any) -> list[dict[str, str]]:
    """Alpaca history: [[question, answer], ...] -> user/assistant messages."""
    if value is None:
        return []
    if isinstance(value, str):
        if not value.strip():
            return []
        parsed = maybe_json(value, "history")  # JSON, or the Python literal pandas writes
        if parsed is value:  # text that does not open a list or object
            raise RowReject("invalid_json", "history is text that is not a JSON list")
        value = parsed
    if not isinstance(value, list):
        raise RowReject("missing_field", "history is not a list of [question, answer] pairs")
    out: list[dict[str, str]] = []
    for k, pair in enumerate(value):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise RowReject("missing_field", f"history[{k}] is not a [question, answer] pair")
        out.append({"role": "user", "content": text_of(pair[0], f"history[{k}][0]") or ""})
        out.append({"role": "assistant", "content": text_of(pair[1], f"history[{k}][1]") or ""})
    return out


class FlatConverter(Converter):
    """A converter driven by a FlatSpec; subclasses choose the spec from the columns."""

    @classmethod
    def spec_for(cls, columns: list[str]) -> FlatSpec | None:
        raise NotImplementedError

    _bound: FlatSpec | None = None

    def bind(self, columns: list[str]) -> None:
        """Fix the columns from the whole input's columns, so every batch reads the same ones."""
        self._bound = self._spec(columns)

    def _spec(self, columns: list[str]) -> FlatSpec:
        if self._bound is not None:
            return self._bound
        spec = self.spec_for(columns)
        if spec is None:
            from dataprep.errors import FindingError
            from dataprep.findings import finding

            raise FindingError(
                finding(
                    "unknown_schema",
                    f"the columns {columns} do not fit the {self.name} shape",
                    hint=f"{self.name} needs {self.description}: map columns with $[mapping] target=source",
                )
            )
        return spec

    # -- per record -----------------------------------------------------------------------------
    def convert_record(self, record: dict[str, Any], spec: FlatSpec | None = None) -> dict[str, Any]:
        spec = spec or self._spec(list(record))
        texts: list[tuple[str, bool, str | None]] = []
        for col, req in spec.user:
            texts.append((col, req, text_of(record.get(col), col, required=req)))
        answer = text_of(record.get(spec.assistant), spec.assistant)
        assert answer is not None
        for col, req, t in texts:
            if req and not t.strip():  # type: ignore[union-attr]
                raise RowReject("empty_content", f"{col} is empty")
        if not answer.strip():
            raise RowReject("empty_content", f"{spec.assistant} is empty")
        user = "\n\n".join(t for _, _, t in texts if t is not None and t.strip())
        messages: list[dict[str, Any]] = []
        system = text_of(record.get(spec.system), spec.system, required=False) if spec.system else None
        if system is not None and system.strip():
            messages.append({"role": "system", "content": system})
        if spec.history:
            messages.extend(_history(record.get(spec.history)))
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": answer})
        return {"messages": messages}

    def _convert_records(self, batch: Batch, spec: FlatSpec) -> Converted:
        return self.convert_each(batch, lambda rec: self.convert_record(rec, spec))

    # -- vectorized -----------------------------------------------------------------------------
    def _vectorizable(self, batch: Batch, spec: FlatSpec) -> bool:
        import pyarrow as pa

        if batch.table is None:
            return False
        names = set(batch.table.column_names)
        if not any(c in names for c in spec.columns if c != spec.history):
            return False  # nothing to build a frame from: every row is a per-record reject
        if (
            spec.history
            and spec.history in names
            and batch.table.column(spec.history).null_count < len(batch)
        ):
            return False
        for col in spec.columns:
            if col in names and col != spec.history:
                t = batch.table.schema.field(col).type
                if not (
                    pa.types.is_string(t)
                    or pa.types.is_large_string(t)
                    or pa.types.is_integer(t)
                    or pa.types.is_null(t)
                    or pa.types.is_boolean(t)
                    or pa.types.is_string_view(t)
                ):
                    return False
        return True

    def _frame(self, batch: Batch, spec: FlatSpec, *, lazy: bool = False):
        """A polars frame: row, code, message (null when fine), system, user and answer texts.

        ``lazy``: the LazyFrame, so that a caller selecting from it runs one query (one pass over the batch).
        """
        import polars as pl

        table = batch.table
        names = set(table.column_names)
        used = [c for c in spec.columns if c in names and c != spec.history]
        df = pl.from_arrow(table.select(used)) if used else pl.DataFrame()
        if not isinstance(df, pl.DataFrame):
            df = df.to_frame()
        if batch.rows is None:  # contiguous rows: no Python list of row numbers
            start = batch.start
            rows = pl.int_range(start, start + len(batch), dtype=pl.Int64, eager=True).alias("__row")
        else:
            rows = pl.Series("__row", batch.rows, dtype=pl.Int64)
        df = df.with_columns(rows) if df.width else rows.to_frame()

        def col(c: str) -> pl.Expr:
            if c not in names:
                return pl.lit(None, dtype=pl.String)
            dt = df.schema[c]
            e = pl.col(c)
            if dt == pl.Boolean:
                return pl.when(e).then(pl.lit("true")).when(~e).then(pl.lit("false")).otherwise(None)
            return e if dt == pl.String else e.cast(pl.String)

        def blank(e: pl.Expr) -> pl.Expr:
            return e.str.contains(BLANK_RE)

        code = pl.lit(None, dtype=pl.String)
        msg = pl.lit(None, dtype=pl.String)
        checks: list[tuple[pl.Expr, str, str]] = []
        for c, req in spec.user:
            if req:
                checks.append((col(c).is_null(), "missing_field", f"{c} is missing"))
        checks.append((col(spec.assistant).is_null(), "missing_field", f"{spec.assistant} is missing"))
        for c, req in spec.user:
            if req:
                checks.append((blank(col(c)), "empty_content", f"{c} is empty"))
        checks.append((blank(col(spec.assistant)), "empty_content", f"{spec.assistant} is empty"))
        # first failing check wins, as in convert_record
        for cond, k, m in reversed(checks):
            code = pl.when(cond).then(pl.lit(k)).otherwise(code)
            msg = pl.when(cond).then(pl.lit(m)).otherwise(msg)

        parts = [pl.when(~blank(col(c))).then(col(c)) for c, _ in spec.user]
        user = pl.concat_str(parts, separator="\n\n", ignore_nulls=True)
        sys_text = self.options.system or None
        system = pl.lit(None, dtype=pl.String)
        if spec.system and spec.system in names:
            s = col(spec.system)
            system = pl.when(s.is_not_null() & ~blank(s)).then(s)
        if sys_text:
            system = system.fill_null(pl.lit(sys_text))
        lf = df.lazy().select(
            pl.col("__row"),
            code.alias("__code"),
            msg.alias("__msg"),
            system.alias("__system"),
            user.alias("__user"),
            col(spec.assistant).alias("__answer"),
        )
        return lf if lazy else lf.collect()

    @staticmethod
    def _messages(df):
        """The messages list column (for conversations as dicts)."""
        import polars as pl

        items = [
            pl.when(pl.col("__system").is_not_null()).then(
                pl.struct(role=pl.lit("system"), content=pl.col("__system"))
            ),
            pl.struct(role=pl.lit("user"), content=pl.col("__user")),
            pl.struct(role=pl.lit("assistant"), content=pl.col("__answer")),
        ]
        return pl.concat_list(items).list.drop_nulls()

    @staticmethod
    def _line(df):
        """The output line, newline included, as a string expression: ``dumps_line`` of the dict + "\\n".

        Built by concatenation around JSON-encoded texts, which is several times cheaper in polars than
        encoding a list of structs.
        """
        import polars as pl

        def enc(name: str) -> pl.Expr:  # a JSON string literal: '{"c":"..."}' without the wrapper
            return pl.struct(pl.col(name).alias("c")).struct.json_encode().str.slice(5).str.head(-1)

        system = (
            pl.when(pl.col("__system").is_not_null())
            .then(pl.concat_str([pl.lit('{"role":"system","content":'), enc("__system"), pl.lit("},")]))
            .otherwise(pl.lit(""))
        )
        return pl.concat_str(
            [
                pl.lit('{"messages":['),
                system,
                pl.lit('{"role":"user","content":'),
                enc("__user"),
                pl.lit('},{"role":"assistant","content":'),
                enc("__answer"),
                pl.lit("}]}\n"),
            ]
        )

    def _rejects(self, batch: Batch, bad) -> list[Reject]:
        import pyarrow as pa

        if bad.height == 0:
            return []
        first = batch.row_numbers()[0] if len(batch) else 0
        rows = bad["__row"].to_list()
        if batch.rows is None:
            idx = [r - first for r in rows]
        else:
            pos = {r: i for i, r in enumerate(batch.rows)}
            idx = [pos[r] for r in rows]
        recs = batch.table.take(pa.array(idx, type=pa.int64())).to_pylist()
        return [
            Reject(r, c, m, rec)
            for r, c, m, rec in zip(rows, bad["__code"].to_list(), bad["__msg"].to_list(), recs, strict=True)
        ]

    def convert(self, batch: Batch) -> Converted:
        cols = batch.table.column_names if batch.table is not None else _record_columns(batch.records())
        spec = self._spec(cols)
        if not self._vectorizable(batch, spec):
            return self._convert_records(batch, spec)
        import polars as pl

        df = self._frame(batch, spec)
        ok = df.filter(pl.col("__code").is_null()).select(
            pl.col("__row"), self._messages(df).alias("messages")
        )
        convs = [{"messages": m} for m in ok["messages"].to_list()]
        return list(zip(ok["__row"].to_list(), convs, strict=True)), self._rejects(
            batch, df.filter(pl.col("__code").is_not_null())
        )

    def convert_lines(self, batch: Batch) -> tuple[list[int], Any, list[Reject]] | None:
        """The vectorized path straight to JSON lines (valid by construction), each ending in a newline, as
        a polars String Series; None when the batch needs the per-record path."""
        if batch.table is None:
            return None
        spec = self._spec(batch.table.column_names)
        if not self._vectorizable(batch, spec):
            return None
        import polars as pl

        # One query: the lines of the rejected rows are built too (and dropped), instead of a pass per filter.
        df = (
            self._frame(batch, spec, lazy=True)
            .select("__row", "__code", "__msg", self._line(None).alias("line"))
            .collect()
        )
        if df["__code"].null_count() == df.height:  # no reject: no filtering
            return df["__row"].to_list(), df["line"], []
        ok = df.filter(pl.col("__code").is_null())
        rejects = self._rejects(batch, df.filter(pl.col("__code").is_not_null()))
        return ok["__row"].to_list(), ok["line"], rejects


def _record_columns(records: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for r in records[:1000]:
        for k in r:
            seen.setdefault(k, None)
    return list(seen)
