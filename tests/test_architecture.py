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
        "converters._common",
        "converters._flat",
        "converters.alpaca",
        "converters.dolly",
        "converters.oasst",
        "converters.openai_messages",
        "converters.prompt_completion",
        "converters.refusals",
        "converters.sharegpt",
        "converters.registry",
        "converters",
    ],
    ["dataprep.pipeline"],  # records -> validated conversations + rejects, for every caller
    ["dataprep.tokenizer", "dataprep.render"],
    ["dataprep.measure"],
    ["dataprep.split", "dataprep.quality", "dataprep.neardup"],
    ["dataprep.normalize"],
    ["dataprep.dedup", "dataprep.inspection"],
    ["dataprep.template_lint", "dataprep.stats", "dataprep.trainer_check"],
    ["dataprep.modelconfig", "dataprep.memory", "dataprep.throughput"],
    ["dataprep.plan", "dataprep.overrides", "dataprep.recipe", "dataprep.manifest", "dataprep.report_html"],
    ["dataprep.engine_ray"],
    ["dataprep.engine"],
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
