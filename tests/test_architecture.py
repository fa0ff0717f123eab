"""The import graph follows the flow ARCHITECTURE.md draws: no module imports one from a later layer, no loops.

Every import counts, top-level or inside a function (a lazy import is still a dependency). A new module must be
placed in a layer here, which is the moment to decide where it belongs.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A module may import from its own layer or an earlier one.
LAYERS: list[list[str]] = [
    [
        "dataprep",
        "dataprep.errors",
        "dataprep.findings",
        "dataprep.safejson",
        "dataprep.atomic",
        "dataprep.defaults",
    ],
    [
        "dataprep.sources.base",
        "dataprep.sources.jsonl",
        "dataprep.sources.sniff",
        "dataprep.sources.packed",
        "dataprep.sources.hub",
        "dataprep.sources.readers",
        "dataprep.sources",
    ],
    [
        "dataprep.trainer",
        "dataprep.messages",
    ],  # the schema and the trainer's view of a row: converters target them
    [
        "dataprep.converters._common",
        "dataprep.converters._flat",
        "dataprep.converters.alpaca",
        "dataprep.converters.dolly",
        "dataprep.converters.oasst",
        "dataprep.converters.openai_messages",
        "dataprep.converters.prompt_completion",
        "dataprep.converters.refusals",
        "dataprep.converters.sharegpt",
        "dataprep.converters.registry",
        "dataprep.converters",
    ],
    ["dataprep.pipeline"],  # records -> validated conversations + rejects, for every caller
    ["dataprep.hf_internals"],  # the private transformers / jinja2 APIs measuring uses, in one place
    ["dataprep.tokenizer", "dataprep.render"],
    ["dataprep.measure"],
    ["dataprep.split", "dataprep.quality", "dataprep.neardup"],
    ["dataprep.normalize"],
    ["dataprep.dedup", "dataprep.inspection"],
    ["dataprep.template_lint", "dataprep.stats", "dataprep.trainer_check"],
    ["dataprep.modelconfig", "dataprep.memory", "dataprep.throughput"],
    ["dataprep.plan", "dataprep.overrides", "dataprep.recipe", "dataprep.manifest", "dataprep.report_html"],
    ["dataprep.engine_ray.session"],
    ["dataprep.engine_ray.blocks"],
    ["dataprep.engine_ray.normalize", "dataprep.engine_ray.stats"],
    ["dataprep.engine_ray"],
    ["dataprep.engine"],
    ["dataprep.preflight.options"],  # the preflight package, lowest first
    ["dataprep.preflight.records"],
    ["dataprep.preflight.split_pass", "dataprep.preflight.outputs"],
    ["dataprep.preflight.run"],
    ["dataprep.preflight"],
    ["dataprep.demo"],
    ["dataprep.cli._common", "dataprep.cli._options", "dataprep.cli._engine"],
    [
        "dataprep.cli.inspect_cmd",
        "dataprep.cli.normalize_cmd",
        "dataprep.cli.plan_cmd",
        "dataprep.cli.preflight_cmd",
        "dataprep.cli.stats_cmd",
        "dataprep.cli.template_cmd",
        "dataprep.cli.validate_cmd",
        "dataprep.cli",
        "dataprep.__main__",
    ],
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in [*ROOT.glob("dataprep/**/*.py"), *ROOT.glob("converters/*.py")]:
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[0] == "converters":  # installed as dataprep.converters (pyproject's package-dir)
            parts = ("dataprep", *parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules ``name`` imports (``from .x import y`` counts x, and x.y when y is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            targets = [target, *(f"{target}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_has_a_layer():
    placed = {m for layer in LAYERS for m in layer}
    assert sorted(set(_modules()) - placed) == []
    assert sorted(placed - set(_modules())) == []  # no stale names


def test_no_module_imports_from_a_later_layer():
    rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    upward = [
        f"{a} -> {b}"
        for a, targets in sorted(_graph().items())
        for b in sorted(targets)
        if rank[b] > rank[a] and b != "dataprep"  # the package itself: only its version string
    ]
    assert upward == []


def test_no_import_loops():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                loops.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert loops == []


def test_the_graph_check_sees_lazy_imports():
    """A function-level import is found as surely as a top-level one (the check would pass vacuously if not)."""
    graph = _graph()
    assert "dataprep.pipeline" in graph["dataprep.dedup"]  # dedup.load_evals imports it inside the function
    assert "dataprep.inspection" in graph["dataprep.cli.inspect_cmd"]


# -- the library names options, the CLI names flags --------------------------------------------------------------
def _library_texts() -> list[tuple[str, int, str]]:
    """(module, line, text) of every string outside the CLI that is not a docstring."""
    out = []
    for name, path in _modules().items():
        if name.startswith("dataprep.cli"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        out += [
            (name, s.lineno, s.value)
            for s in ast.walk(tree)
            if isinstance(s, ast.Constant) and isinstance(s.value, str) and id(s) not in docs
        ]
    return out


# Strings that spell flags on purpose: the demo runs the CLI; AutoModel's own command line; another tool's; the
# tokenizer's template-source label, which names where a template came from as the user gave it.
FLAGS_ON_PURPOSE = {
    "dataprep.demo": ("--",),
    "dataprep.recipe": ("--config", "--dotted.key"),
    "dataprep.sources.hub": ("huggingface-cli download --repo-type",),
    "dataprep.tokenizer": ("--chat-template",),
    "dataprep.trainer_check": ("--chat-template",),
}


def test_the_library_names_options_not_flags():
    """A flag is the CLI's spelling; the library writes ``$[param]``, which ``findings.finding`` renders as the
    parameter name, or inside the CLI as the command's flag. Only a whole example command line (``dataprep ...``,
    or one in backquotes) and the strings above spell flags."""
    import re

    texts = _library_texts()
    assert sum("$[" in t for _, _, t in texts) > 80  # the scan sees the library's messages
    flagged = [
        (name, line, text)
        for name, line, text in texts
        if not text.startswith("dataprep ")
        and re.search(r"(?<![\w-])--[a-z]", re.sub(r"`[^`]*`", "", text))
        and not any(allowed in text for allowed in FLAGS_ON_PURPOSE.get(name, ()))
    ]
    assert flagged == []


def test_every_option_the_library_names_is_a_flag_of_some_command():
    import re

    import click

    from dataprep.cli import COMMANDS, main

    names: set[str] = set()
    with click.Context(main) as ctx:
        for command in COMMANDS:
            names |= {p.name for p in main.get_command(ctx, command).get_params(ctx)}  # type: ignore[union-attr]
    used = {
        (m.group(1), name, line) for name, line, t in _library_texts() for m in re.finditer(r"\$\[(\w+)\]", t)
    }
    assert used and sorted(u for u in used if u[0] not in names) == []


def test_a_usage_error_reads_as_parameters_in_python_and_as_flags_on_the_command_line():
    from dataprep.errors import UsageError
    from dataprep.findings import finding, options_named

    def raise_it():
        raise UsageError(
            "$[seq_length] 0: must be positive (recipe var ${HOME_DIR})", hint="e.g. $[seq_length] 4096"
        )

    try:
        raise_it()
    except UsageError as err:
        assert err.finding.message == "seq_length 0: must be positive (recipe var ${HOME_DIR})"
        assert err.finding.hint == "e.g. seq_length 4096"
    with options_named(lambda option: "--" + option.replace("_", "-")):
        try:
            raise_it()
        except UsageError as err:
            assert (err.finding.message, err.finding.hint) == (
                "--seq-length 0: must be positive (recipe var ${HOME_DIR})",
                "e.g. --seq-length 4096",
            )
        # a finding's catalogue hint too
        assert "--fmt NAME" in finding("unknown_schema", "x").hint
    assert (
        "fmt NAME" in finding("unknown_schema", "x").hint and "--" not in finding("unknown_schema", "x").hint
    )


def test_the_cli_names_an_option_as_the_flag_of_whichever_command_has_it(cli, tmp_path):
    """inspect has no --format or --map, but its unknown_schema hint names them as normalize spells them."""
    data = tmp_path / "x.jsonl"
    data.write_text('{"foo": 1, "bar": 2}\n', encoding="utf-8")
    r = cli("inspect", data)
    assert "--format NAME" in r.stderr and "--map target=source" in r.stderr, r
    assert "$[" not in r.stderr


def test_every_package_folder_is_installed():
    """pyproject lists the packages (the converters folder maps to dataprep.converters): a new subpackage that
    is not listed would be missing from the wheel, though every test run from the source tree passes."""
    import re

    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # tomllib is 3.11+; the project runs on 3.10
    listed = set(
        re.findall(r'^\s*"(dataprep[\w.]*)",', text.split("packages = [", 1)[1].split("]", 1)[0], re.M)
    )
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in ROOT.glob("dataprep/**/__init__.py")}
    assert listed == folders | {"dataprep.converters", "dataprep.templates"}
    assert 'package-dir = { "dataprep.converters" = "converters" }' in text
