"""What every command shares: the output flags, error handling, and how findings are printed.

A command body returns an ``Outcome`` (a JSON-native payload, its findings, and an optional function that
prints the human report). ``run`` turns it into output and an exit code:

- ``--json``: one JSON document on stdout (payload + ``findings``), nothing else there.
- human output (the report and every finding as ``error[code]: message`` + ``hint:``) goes to stderr.
- exit 0 / 1 by the findings (``--strict`` promotes warnings); ``DataprepError`` exits with its own code (2).
- an OS error no library call turned into a finding (an input that vanished, a permission) is
  ``unreadable_input`` naming its path, exit 2; a closed stdout (``| head -1``) exits quietly with 141.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import click

from ..errors import DataprepError
from ..findings import EXIT_USAGE, Finding, Severity, apply_strict, exit_code, options_named

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "bold yellow", Severity.INFO: "bold cyan"}
MAX_ROWS_SHOWN = 10


@dataclass
class Outcome:
    payload: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    render: Callable[[Any], None] | None = None  # called with a rich Console on stderr
    exit_code: int | None = None  # overrides the findings-based code when set


def output_options(f: Callable) -> Callable:
    """--json, --quiet and --strict, spelled the same on every command."""
    f = click.option("--strict", is_flag=True, help="Treat warnings as errors (exit 1).")(f)
    f = click.option("--quiet", "-q", is_flag=True, help="No human output; the exit code still tells.")(f)
    f = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(f)
    return f


def console(quiet: bool = False):
    from rich.console import Console

    return Console(stderr=True, quiet=quiet, highlight=False, soft_wrap=True)


class RowsBar:
    """A rows progress line: ``advance(n)`` for rows done since the last call, ``set(done, total)`` for a count."""

    def __init__(self, bar: Any, task: Any):
        self._bar, self._task = bar, task

    def advance(self, n: int) -> None:
        self._bar.advance(self._task, n)

    def set(self, done: int, total: int | None = None) -> None:
        self._bar.update(self._task, completed=done, total=total if total and total >= done else None)


@contextlib.contextmanager
def rows_progress(label: str, enabled: bool) -> Iterator[RowsBar | None]:
    """The one progress line of the commands that stream rows: on stderr when it is a terminal (and not --quiet
    or --json), transient; None otherwise."""
    con = console()
    if not enabled or not con.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        SpinnerColumn(), TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=con, transient=True,
    ) as bar:  # fmt: skip
        yield RowsBar(bar, bar.add_task("rows", total=None))


def format_finding(f: Finding) -> str:
    """``error[code]: message`` then ``hint: ...`` (plain text; the console adds colour)."""
    lines = [f"{f.severity.value}[{f.code}]: {f.message}"]
    if f.rows:
        shown = ", ".join(str(r) for r in f.rows[:MAX_ROWS_SHOWN])
        more = len(f.rows) - MAX_ROWS_SHOWN
        lines.append(f"  rows: {shown}" + (f" (+{more} more)" if more > 0 else ""))
    if f.hint:
        lines.append(f"  hint: {f.hint}")
    return "\n".join(lines)


def print_findings(con, findings: list[Finding]) -> None:
    from rich.markup import escape

    for f in findings:
        head, _, rest = format_finding(f).partition("\n")
        con.print(f"[{_STYLE[f.severity]}]{escape(head)}[/]" + ("\n" + escape(rest) if rest else ""))


def dump_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2, default=str)


def usage_exit(f: Finding, *, as_json: bool = False) -> NoReturn:
    """Print a command-line error as a finding (and as JSON with --json); exit 2."""
    if as_json:
        sys.stdout.write(dump_json({"findings": [f.to_dict()]}) + "\n")
        sys.stdout.flush()
    print_findings(console(), [f])
    sys.exit(EXIT_USAGE)


EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE, what `yes | head -1` leaves for `yes`


def closed_pipe_exit() -> NoReturn:
    """stdout's reader went away (``dataprep ... | head -1``): stop quietly, no flush error at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(EXIT_CLOSED_PIPE)


def os_error_finding(err: OSError) -> Finding:
    """An OS error no reader or writer named: ``unreadable_input`` on its path, with the cause."""
    from ..errors import os_error_text
    from ..findings import finding

    cause, _ = os_error_text(err)
    where = err.filename if getattr(err, "filename", None) else "input"
    return finding(
        "unreadable_input", f"{where}: {cause}", hint="check the path, its permissions and the device"
    )


def _spelled(param: click.Parameter) -> str:
    longs = [o for o in param.opts if o.startswith("--")]
    return longs[0] if longs else param.human_readable_name


def flag_of(option: str) -> str:
    """How the command line spells a library option (``seq_length`` -> ``--seq-length``, ``fmt`` -> ``--format``,
    ``out`` -> ``OUT``): the running command's parameter of that name, else the first command that has one (a
    hint may name another command's flag), else the option's name as a flag."""
    ctx = click.get_current_context(silent=True)
    root = None
    while ctx is not None:
        for p in ctx.command.params:
            if p.name == option:
                return _spelled(p)
        root = ctx
        ctx = ctx.parent
    group = root.command if root is not None else None
    if isinstance(group, click.Group):
        for name in group.list_commands(root):
            command = group.get_command(root, name)
            for p in command.params if command is not None else ():
                if p.name == option and isinstance(p, click.Option):
                    return _spelled(p)
    return "--" + option.replace("_", "-")


def run(
    body: Callable[[], Outcome], *, as_json: bool = False, quiet: bool = False, strict: bool = False
) -> NoReturn:
    """Run a command body, print its outcome, and exit with the policy's code."""
    try:
        with options_named(flag_of):  # the library's $[param] read as this command's flags
            outcome = body()
    except DataprepError as err:
        if os.environ.get("DATAPREP_RAISE"):
            raise
        outcome = Outcome(findings=[err.finding], exit_code=err.exit_code)
    except OSError as err:
        if err.errno == errno.EPIPE:
            closed_pipe_exit()
        if os.environ.get("DATAPREP_RAISE"):
            raise
        outcome = Outcome(findings=[os_error_finding(err)], exit_code=EXIT_USAGE)
    findings = apply_strict(outcome.findings, strict)
    con = console(quiet)
    try:
        if as_json:
            sys.stdout.write(
                dump_json({**outcome.payload, "findings": [f.to_dict() for f in findings]}) + "\n"
            )
            sys.stdout.flush()
        elif outcome.render is not None and not quiet:
            outcome.render(con)
        print_findings(con, findings)
    except BrokenPipeError:
        closed_pipe_exit()
    code = outcome.exit_code if outcome.exit_code is not None else exit_code(findings)
    sys.exit(code)
