"""``dataprep inspect PATH``: what an input is, and whether it is packed."""

from __future__ import annotations

import json

import click

from ._common import Outcome, output_options, run


def _render(report):
    def render(con) -> None:
        from rich.markup import escape
        from rich.table import Table

        d = report.to_dict()
        rows = (
            "?"
            if d["num_rows"] is None
            else f"{d['num_rows']:,}" + ("" if d["num_rows_exact"] else " (estimate)")
        )
        fmt = d["format"] + (f" ({d['data_format']})" if "data_format" in d else "")
        head = Table.grid(padding=(0, 2))
        head.add_column(style="bold")
        head.add_column()
        head.add_row("path", escape(d["path"]))
        head.add_row("format", fmt + ("" if d["compression"] == "none" else f", {d['compression']}"))
        if d["num_files"] > 1:
            head.add_row("files", str(d["num_files"]))
        if d.get("split"):
            head.add_row("split", str(d["split"]))
        head.add_row("rows", rows)
        shape = d["shape"]
        head.add_row("shape", escape(shape.get("shape") or shape.get("name") or str(shape)) if shape else "-")
        packed = d["packed"]
        head.add_row(
            "packed",
            (packed["kind"] or "yes")
            if packed["packed"]
            else ("no" if not packed["kind"] else packed["kind"]),
        )
        con.print(head)
        if d["columns"]:
            cols = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
            cols.add_column("column")
            cols.add_column("type")
            for c in d["columns"]:
                cols.add_row(escape(c["name"]), escape(c["type"]))
            con.print(cols)
        for i, rec in enumerate(d["sample"], start=1):
            con.print(f"[bold]sample {i}[/] " + escape(json.dumps(rec, ensure_ascii=False)))

    return render


@click.command("inspect")
@click.argument("path")
@click.option(
    "--encoding", default=None, metavar="E", help="Text encoding of CSV/TSV/JSON input (default UTF-8)."
)
@click.option(
    "--sample",
    "sample_rows",
    default=3,
    show_default=True,
    type=click.IntRange(0, 100),
    help="How many sample rows to show.",
)
@output_options
def inspect_cmd(
    path: str, encoding: str | None, sample_rows: int, as_json: bool, quiet: bool, strict: bool
) -> None:
    """Say what PATH is: format, compression, rows, columns, sample rows, record shape, packed or not.

    PATH is a file (CSV, TSV, JSON, JSONL, each optionally .gz/.bz2/.zst; Parquet; Arrow/Feather), a folder or
    glob of shards of one format, a `datasets` save_to_disk folder, a dataset id in the local HF cache, or -
    for JSONL on stdin. Packed or pre-tokenized input, and records of no known shape (unknown_schema), exit 1;
    input that cannot be read exits 2.

    Example: dataprep inspect data/train.jsonl.gz --json
    """

    def body() -> Outcome:
        from ..inspection import inspect_input

        report = inspect_input(path, encoding=encoding, sample_rows=sample_rows)
        return Outcome(report.to_dict(), list(report.findings), _render(report))

    run(body, as_json=as_json, quiet=quiet, strict=strict)
