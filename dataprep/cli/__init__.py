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


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._spec_importable(name)]

    @staticmethod
    def _spec_importable(name: str) -> bool:
        module = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["dataprep.argv"] = list(args)  # for usage errors: was --json asked for?
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
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

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        spec = COMMANDS.get(name)
        if spec is None or not self._spec_importable(name):
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
