"""``dataprep validate PATH``: check a messages JSONL against the schema ChatDataset accepts."""

from __future__ import annotations

import click

from ._common import Outcome, output_options, run


@click.command("validate")
@click.argument("path", type=click.Path(allow_dash=True))
@output_options
def validate_cmd(path, as_json, quiet, strict):
    """Check every line of a messages JSONL: known roles, string content, an assistant answer, system only
    first, tool messages answering an earlier tool call, tool-call arguments that are JSON.

    \b
    Example:
      dataprep validate train.jsonl --json

    Each broken rule is an error finding with the count and the first line numbers (exit 1);
    every problem (up to 100) is listed with its line and message index in --json.
    """

    def body() -> Outcome:
        from ..messages import validate_file

        result = validate_file(path)

        def render(con) -> None:
            from rich.markup import escape

            con.print(f"{escape(path)}: {result.rows} rows, {result.valid} valid, {result.invalid} invalid")
            for p in result.problems[:10]:
                where = f"line {p['line']}" + (f", message {p['index']}" if p["index"] is not None else "")
                con.print(f"  {where}: {escape('[' + p['code'] + ']')} {escape(p['message'])}")

        return Outcome(result.to_dict(), result.findings(), render)

    run(body, as_json=as_json, quiet=quiet, strict=strict)
