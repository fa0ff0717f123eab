"""``dataprep normalize IN OUT``: any records -> OpenAI messages JSONL, plus a rejects file."""

from __future__ import annotations

import click

from ._common import Outcome, output_options, rows_progress, run
from ._engine import engine_options
from ._options import ConvertFlags, convert_options


class _NormalizeCommand(click.Command):
    """``--dedup`` takes an optional value (exact|near); a bare ``--dedup`` followed by IN (``normalize --dedup
    in.csv out.jsonl``, valid before the value existed) must stay a flag, so it is read as ``--dedup=exact``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        fixed = list(args)
        for i, a in enumerate(fixed[:-1]):
            if a == "--":
                break
            if a == "--dedup" and fixed[i + 1] not in DEDUP_VALUES:
                fixed[i] = "--dedup=exact"
        return super().parse_args(ctx, fixed)


DEDUP_VALUES = ("exact", "near")


@click.command("normalize", cls=_NormalizeCommand)
@click.argument("inp", metavar="IN", type=click.Path(dir_okay=True, allow_dash=True))
@click.argument("out", metavar="OUT", type=click.Path())
@convert_options
@click.option(
    "--dedup",
    type=click.Choice(DEDUP_VALUES),
    is_flag=False,
    flag_value="exact",
    default=None,
    help="Drop exact duplicates of the normalized conversation (a bare --dedup is exact); near: also set near "
    "duplicates (word 3-gram Jaccard >= 0.7) aside in rejects as near_duplicate.",
)
@click.option(
    "--rejects", type=click.Path(dir_okay=False), help="Rejects file [default: OUT stem + .rejects.jsonl]."
)
@click.option("--force", is_flag=True, help="Replace OUT (and the rejects file) when they exist.")
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    metavar="N",
    help="Rows longer than N tokens through --model's chat template go to rejects as too_long.",
)
@click.option("--model", default=None, help="With --max-tokens: the tokenizer and chat template that count.")
@click.option("--chat-template", default=None, help="With --max-tokens: a template instead of the model's.")
@engine_options(merge=True)
@output_options
def normalize_cmd(
    inp,
    out,
    convert: ConvertFlags,
    dedup,
    rejects,
    force,
    max_tokens,
    model,
    chat_template,
    engine,
    ray_address,
    merge,
    as_json,
    quiet,
    strict,
):
    """Convert records (alpaca, sharegpt, prompt/completion, dolly, OASST, OpenAI messages...) to the chat
    JSONL AutoModel's ChatDataset reads.

    \b
    Example:
      dataprep normalize train.csv train.jsonl --map instruction=question --map output=answer

    \b
    Shapes: openai_messages, sharegpt, alpaca, prompt_completion, dolly, oasst, preference and kto (--take chosen).
    Every input row ends in OUT, in the rejects file (row number, code, message, original record), or in
    the duplicate count: the summary shows read = written + rejected + duplicates.
    Rejected rows do not fail the run: each reject code is a warning (exit 0; --strict exits 1). When no
    row survives, they are errors (exit 1). Packed input, preference data without --take, lone text and
    an unrecognised shape are refused with exit 1; bad flags and unreadable input exit 2.
    """

    def body() -> Outcome:
        from ..engine import normalize_on

        with rows_progress("normalizing", enabled=not (quiet or as_json)) as bar:
            progress = bar.set if bar is not None else None
            result = normalize_on(
                engine,
                inp,
                out,
                convert.spec(),
                ray_address=ray_address,
                merge=merge,
                dedup=dedup,
                rejects=rejects,
                force=force,
                progress=progress,
                **(
                    {"max_tokens": max_tokens, "model": model, "chat_template": chat_template}
                    if max_tokens is not None
                    else {}
                ),
            )

        def render(con) -> None:
            from rich.markup import escape

            d = result.detection
            how = "forced" if d.forced else "detected"
            con.print(
                f"shape: [bold]{d.shape}[/] ({how}, confidence {d.confidence:.2f}; "
                f"columns: {escape(', '.join(d.matched) or '-')})"
            )
            unit = result.unit + "s"
            con.print(
                f"{unit}: read {result.read} = written {result.written} + rejected {result.rejected}"
                f" + duplicates {result.duplicates}"
                + (f"  (from {result.records_read} input rows)" if result.unit != "row" else "")
            )
            con.print(f"wrote {escape(str(result.output))}")
            if result.rejected:
                con.print(f"rejects: {escape(str(result.rejects_path))}")

        return Outcome(result.to_dict(), result.findings(), render)

    run(body, as_json=as_json, quiet=quiet, strict=strict)
