"""``dataprep check-template MODEL``: load the tokenizer offline, lint its chat template, show a rendered sample."""

from __future__ import annotations

import click

from ._common import Outcome, output_options, run


@click.command("check-template")
@click.argument("model")
@click.option(
    "--chat-template",
    "chat_template",
    metavar="TEMPLATE",
    help="Use this template instead of the tokenizer's: a Jinja string, a .jinja file, or a JSON file with a "
    "chat_template key (what AutoModel's dataset.chat_template accepts).",
)
@click.option(
    "--allow-download", is_flag=True, help="Fetch the tokenizer from the Hugging Face Hub when not cached."
)
@click.option(
    "--dataset", "dataset", metavar="PATH", help="Also render the first --samples rows of this dataset."
)
@click.option(
    "--samples", type=click.IntRange(min=1), default=100, show_default=True, help="Rows of --dataset."
)
@click.option("--tokens", is_flag=True, help="Show the sample's token ids (and in --json, ids and mask).")
@output_options
def check_template_cmd(
    model, chat_template, allow_download, dataset, samples, tokens, as_json, quiet, strict
):
    """Lint MODEL's chat template: render probe conversations and report what would go wrong in training
    (system prompt dropped or injected, strict alternation, tools required, date injected, reasoning dropped,
    no {% generation %} tags, unstable prefixes, double BOS, untrained EOS, pad = EOS, split role markers).
    MODEL is a local folder or a Hugging Face id in the local cache; nothing is downloaded unless asked.

    \b
    Example:
      dataprep check-template ./models/my-model --dataset train.jsonl --samples 50

    Prints the findings and a rendered sample with the supervised (assistant) spans highlighted; --json gives
    {model, template_source, template_sha256, special_tokens, findings, sample}.
    """

    def body() -> Outcome:
        from ..template_lint import check_template

        report = check_template(
            model, dataset, chat_template=chat_template, allow_download=allow_download, samples=samples
        )
        payload = report.to_dict(tokens=tokens)
        payload.pop("findings")  # _common.run adds them (after --strict)
        return Outcome(payload, list(report.findings), lambda con: _render(con, report, tokens))

    run(body, as_json=as_json, quiet=quiet, strict=strict)


_SUPERVISED = "bold green"
_CONTEXT = "dim"


def _render(con, report, tokens: bool) -> None:
    from rich.markup import escape
    from rich.text import Text

    lt = report.loaded
    con.print(f"[bold]{escape(lt.model)}[/] ({escape(str(lt.model_dir))})")
    if lt.template is not None:
        con.print(f"  template: {escape(lt.template_source or '')}  sha256 {lt.template_sha256[:16]}…")
        con.print(f"  generation tags: {'yes' if lt.has_generation_tags else 'no'}")
    st = lt.special_tokens()
    shown = ", ".join(f"{k}={v['token']!r}" for k, v in st.items() if isinstance(v, dict))
    con.print(f"  special tokens: {escape(shown)}; encoding adds BOS: {'yes' if st['adds_bos'] else 'no'}")
    if report.dataset is not None:
        d = report.dataset
        con.print(f"  dataset {escape(d.path)}: {d.rows_rendered} rows rendered, {d.rows_failed} failed")
    sample = report.sample
    if sample is None:
        return
    con.print(
        f"\n[bold]sample[/] ({sample.total_tokens} tokens, {sample.supervised_tokens} supervised, "
        f"masks from {sample.mask_source}; [{_SUPERVISED}]supervised[/] vs [{_CONTEXT}]context[/]):"
    )
    text = Text()
    pos = 0
    for span in sample.spans:
        if span.start > pos:
            text.append(sample.text[pos : span.start], style=_CONTEXT)
        text.append(sample.text[max(span.start, pos) : span.end], style=_SUPERVISED)
        pos = max(pos, span.end)
    text.append(sample.text[pos:], style=_CONTEXT)
    con.print(text)
    if tokens:
        con.print("\n[bold]tokens[/] (id:piece, supervised in green):")
        tok = lt.tokenizer
        line = Text()
        for tid, m in zip(sample.input_ids, sample.mask, strict=True):
            piece = tok.convert_ids_to_tokens(tid)
            line.append(f"{tid}:{piece} ", style=_SUPERVISED if m else _CONTEXT)
        con.print(line)
    con.print()
