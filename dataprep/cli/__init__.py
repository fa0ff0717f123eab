"""The ``dataprep`` command line: a thin click layer over the library.

Commands load lazily (one module each under ``dataprep.cli``), so ``dataprep --help`` and ``inspect``
never import transformers or datasets.
"""

from __future__ import annotations

import importlib

import click

from .. import __version__

# name -> "module:attribute"; the module is imported only when the command runs or its help is shown.
COMMANDS: dict[str, str] = {
    "inspect": "dataprep.cli.inspect_cmd:inspect_cmd",
    "normalize": "dataprep.cli.normalize_cmd:normalize_cmd",
    "validate": "dataprep.cli.validate_cmd:validate_cmd",
    "check-template": "dataprep.cli.template_cmd:check_template_cmd",
    "stats": "dataprep.cli.stats_cmd:stats_cmd",
    "plan": "dataprep.cli.plan_cmd:plan_cmd",
    "preflight": "dataprep.cli.preflight_cmd:preflight_cmd",
    "verify-manifest": "dataprep.cli.preflight_cmd:verify_manifest_cmd",
}


class Terminated(BaseException):  # noqa: N818 - a signal, like KeyboardInterrupt
    """SIGTERM, raised in the main thread so that ``with`` blocks (atomic writes) unwind and clean up."""


def _on_sigterm_raise():
    """Make SIGTERM raise ``Terminated`` in the main thread; returns the function that restores the handler."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise Terminated()

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, old)


def _stopped(message: str, code: int) -> None:
    import sys

    try:
        sys.stderr.write(f"dataprep: {message}\n")
        sys.stderr.flush()
    except OSError:
        pass
    sys.exit(code)


def _bug(err: BaseException) -> None:
    """An exception no part of dataprep expected: the traceback, and that it is a bug."""
    import sys
    import traceback

    traceback.print_exception(err, file=sys.stderr)
    sys.stderr.write(
        f"error[internal_error]: this is a bug in dataprep {__version__}: {type(err).__name__}: {err}\n"
        "  hint: please report it on dataprep's issue tracker with the command line, the input's shape if you can "
        "share it, and the traceback above (DATAPREP_RAISE=1 re-raises it)\n"
    )
    sys.exit(70)  # EX_SOFTWARE


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["dataprep.argv"] = list(args)  # for usage errors: was --json asked for?
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        """Run the command; Ctrl-C and SIGTERM end it with 130 / 143 (the shell's convention) after every
        temporary file is removed (atomic writes clean up as the exception unwinds); an unexpected exception
        is a bug and says so."""
        restore = _on_sigterm_raise()
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            _stopped("interrupted (SIGINT): no output was left half-written", 130)
        except Terminated:
            _stopped("terminated (SIGTERM): no output was left half-written", 143)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as err:
            # Bad flags are a finding like every other problem (and a JSON document with --json), exit 2.
            from ..findings import finding
            from ._common import usage_exit

            path = (err.ctx or ctx).command_path.split()[1:]  # the program may be named otherwise
            where = " ".join(["dataprep", *path])
            f = finding("usage_error", err.format_message(), hint=f"see `{where} --help`")
            usage_exit(f, as_json="--json" in ctx.meta.get("dataprep.argv", ()))
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as err:  # a bug: say so, with how to report it
            import os

            if os.environ.get("DATAPREP_RAISE"):
                raise
            _bug(err)
        finally:
            restore()

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        spec = COMMANDS.get(name)
        if spec is None:
            return None
        module, attr = spec.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.version_option(__version__, prog_name="dataprep")
def main() -> None:
    """Dataset preparation and preflight checks for NeMo AutoModel fine-tuning (SFT and LoRA).

    Every problem is a finding `error[code]: message` with a hint. Exit codes: 0 no error-level
    finding, 1 at least one (--strict counts warnings), 2 usage error or unreadable input.
    """
