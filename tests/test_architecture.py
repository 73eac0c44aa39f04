"""The package layout is the architecture: phases stacked in DAG order, checked on the imports.

Every `import` of an mssync module in src/mssync is read with ast (those inside functions too,
and relative ones), and three rules are enforced:

1. A phase package imports only itself and earlier phases (PHASES order). cli.py, __init__.py and
   __main__.py are the top and may import anything; a phase may import the root package (its
   __init__.py runs on any mssync import anyway) but not cli.py or __main__.py.
2. Training modules (TRAINING) are imported only by cli.py and by the training modules themselves:
   inference, evaluation and rendering load checkpoints, they never import a trainer.
3. No import cycles between packages.

A failure names file:line, the import and the rule it breaks. tests/test_dvc_deps.py reuses
`mssync_imports` to compute each DVC stage's import closure.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import pytest
from helpers import ROOT_PACKAGE, SRC, Import, module_file, module_files, module_name, mssync_imports

REPO = Path(__file__).resolve().parents[1]
PHASES = ("core", "media", "data", "features", "motion", "syncers", "gan", "render", "evaluation")
TOP = {"mssync", "mssync.cli", "mssync.__main__"}  # may import anything
TRAINING = {"mssync.syncers.train", "mssync.gan.train"}
TRAINING_IMPORTERS = {"mssync.cli"} | TRAINING














def all_imports() -> list[Import]:
    return [imp for path in module_files() for imp in mssync_imports(path)]


def package_of(module: str) -> str:
    """mssync.gan.train -> mssync.gan; top-level modules (mssync, mssync.cli) are their own node."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and SRC.joinpath(*parts[:2]).is_dir() else module


def phase_rank(module: str) -> int | None:
    """Position of the module's phase in PHASES; None for the top modules."""
    if module in TOP:
        return None
    phase = module.split(".")[1]
    if phase not in PHASES:
        raise AssertionError(f"{module}: package '{phase}' is not in PHASES {PHASES} of tests/test_architecture.py; "
                             "add it at its place in the DAG (or move the module into a phase package)")
    return PHASES.index(phase)


def test_every_module_is_in_a_phase_package_or_the_top():
    unknown = [module_name(p) for p in module_files() if module_name(p) not in TOP
               and module_name(p).split(".")[1] not in PHASES]
    if unknown:
        pytest.fail(f"modules outside the phase packages {PHASES} and the top {sorted(TOP)}: {unknown}", pytrace=False)


def test_no_package_imports_a_later_phase():
    broken = []
    for imp in all_imports():
        rank = phase_rank(imp.importer)
        if rank is None or imp.target == ROOT_PACKAGE:
            continue
        target_rank = phase_rank(imp.target)
        if target_rank is None:
            broken.append(f"{imp.where}: {imp.importer} imports {imp.target}: a phase package may not import "
                          "the top (cli.py, __main__.py)")
        elif target_rank > rank:
            broken.append(f"{imp.where}: {imp.importer} imports {imp.target}: phase '{PHASES[rank]}' may import "
                          f"only itself and earlier phases ({', '.join(PHASES[: rank + 1])}), "
                          f"not the later '{PHASES[target_rank]}'")
    if broken:
        pytest.fail("imports against the phase order:\n" + "\n".join(broken), pytrace=False)


def test_only_the_cli_and_trainers_import_a_training_module():
    broken = [f"{imp.where}: {imp.importer} imports the training module {imp.target}: only "
              f"{', '.join(sorted(TRAINING_IMPORTERS))} may (move what it needs out of the trainer)"
              for imp in all_imports() if imp.target in TRAINING and imp.importer not in TRAINING_IMPORTERS]
    if broken:
        pytest.fail("non-training modules importing a training module:\n" + "\n".join(broken), pytrace=False)


def test_training_modules_exist():
    """A renamed trainer would make the rule above check nothing."""
    assert all(module_file(name) for name in TRAINING), [name for name in TRAINING if not module_file(name)]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a node path) per strongly connected component with more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(node: str) -> None:  # Tarjan; the graph has a dozen nodes, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in sorted(edges[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(set(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    cycles = []
    for component in components:  # walk inside the component from its smallest node back to it
        start = min(component)
        path, seen = [start], {start}
        while True:
            succ = min(s for s in edges[path[-1]] if s in component)
            if succ in seen:
                cycles.append(path[path.index(succ):] + [succ])
                break
            path.append(succ)
            seen.add(succ)
    return cycles


def test_no_import_cycles_between_packages():
    edges: dict[str, set[str]] = defaultdict(set)
    example: dict[tuple[str, str], Import] = {}
    for imp in all_imports():
        source, target = package_of(imp.importer), package_of(imp.target)
        edges.setdefault(target, set())
        if source != target:
            edges[source].add(target)
            example.setdefault((source, target), imp)
    cycles = _cycles(edges)
    lines = []
    for cycle in cycles:
        hops = [example[(a, b)] for a, b in itertools.pairwise(cycle)]
        lines.append(" -> ".join(cycle) + "\n" + "\n".join(
            f"    {imp.where}: {imp.importer} imports {imp.target}" for imp in hops))
    if cycles:
        pytest.fail("import cycles between packages:\n" + "\n".join(lines), pytrace=False)
