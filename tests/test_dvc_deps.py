"""dvc.yaml's code deps cover what each stage runs, derived from the sources (nothing hard-coded).

For each DVC stage `snakemake --cores all <target>`:
  target rule -> the .smk file that defines it -> the `mssync <command>`s in the shell strings of
  that file's rules (upstream phases are DVC stages of their own, with their outs as deps; a
  file with two phase targets, gan.smk, counts all its rules for both: a superset, never less)
  -> each command's handler in the CLI module (`add_parser("<command>")` + `set_defaults(func=...)`)
  -> the imports of that handler and of the CLI helpers it calls, plus the CLI's module-level ones
  -> the transitive closure of mssync imports (every import in a module, inside functions too;
  importing mssync.a.b runs mssync/__init__.py and mssync/a/__init__.py, so those count).
The mssync imports of the Snakefile and .smk files themselves (validate_params, read_manifest, ...)
run for every stage, so they join every stage's closure. A dep covers a file when it is that
file or a folder above it. The workflow files each phase file leans on (names it uses that
another .smk defines, the schemas the code names) are checked the same way.

The integration test proves the point with real DVC: recorded gan stage, one line appended to a
module of its closure -> `dvc status` reports gan changed; a module outside -> it does not.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import json
import re
import shlex
import tokenize
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml
from helpers import REPO, ROOT_PACKAGE, SRC, module_file, mssync_imports

SNAKEFILE = REPO / "Snakefile"
DVC_FILES = (REPO / "dvc.yaml", REPO / "workflow/crossval/dvc.yaml")  # the crossval pipeline lives apart
SCHEMAS = REPO / "workflow" / "schemas"
RULE_HEADER = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:|^use\s+rule\s+(\w+)\s+as\s+(\w+)")
INCLUDE = re.compile(r"""^include:\s*["']([^"']+)["']""", re.MULTILINE)
COMMAND = re.compile(r"(?:^|[\s;&|(])mssync\s+([a-z][\w-]*)")
DEFINITION = re.compile(r"^(?:def\s+(\w+)|(\w+)\s*(?::[^=\n]*)?=[^=])", re.MULTILINE)  # top-level names


# --------------------------------------------------------------------------- the workflow, as text


@dataclasses.dataclass
class Rule:
    name: str
    path: Path
    commands: set[str]
    base: str | None = None  # `use rule <base> as <name>`: inherits the base's commands


def workflow_files() -> list[Path]:
    """The Snakefile and every file it includes (recursively, in include order)."""
    files, todo = [], [SNAKEFILE]
    while todo:
        path = todo.pop(0)
        files.append(path)
        todo += [(path.parent / inc).resolve() for inc in INCLUDE.findall(path.read_text())]
    return files


def _string_groups(text: str) -> list[tuple[int, str]]:
    """(line, value) of each string literal, adjacent literals joined; comments are skipped."""
    groups: list[tuple[int, str]] = []
    last_end = None
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.STRING:
            try:
                value = ast.literal_eval(tok.string)
            except (ValueError, SyntaxError):  # f-strings before 3.12: the literal text will do
                value = tok.string
            value = value if isinstance(value, str) else value.decode(errors="replace")
        elif tok.type == getattr(tokenize, "FSTRING_MIDDLE", None):
            value = tok.string
        elif tok.type in (tokenize.NL, tokenize.COMMENT) or tok.type == getattr(tokenize, "FSTRING_START", None) \
                or tok.type == getattr(tokenize, "FSTRING_END", None):
            continue
        else:
            last_end = None
            continue
        if last_end is not None:
            groups[-1] = (groups[-1][0], groups[-1][1] + value)
        else:
            groups.append((tok.start[0], value))
        last_end = tok.end
    return groups


def _names_used(text: str) -> set[str]:
    """Identifiers in the code and words in its strings (globals().get("X")); comments do not count."""
    names = {tok.string for tok in tokenize.generate_tokens(io.StringIO(text).readline) if tok.type == tokenize.NAME}
    return names | {word for _, value in _string_groups(text) for word in re.findall(r"\w+", value)}


@cache
def rules_of(path: Path) -> dict[str, Rule]:
    """The rules a .smk file defines, each with the `mssync` commands in its strings.

    A rule block runs from its header to the next line that starts in column 0. Commands in
    strings outside any rule (a helper function building a shell line) belong to every rule of
    the file.
    """
    text = path.read_text()
    lines = text.splitlines()
    owner: list[str | None] = [None] * (len(lines) + 2)  # 1-based line -> rule name
    rules: dict[str, Rule] = {}
    current = None
    for number, line in enumerate(lines, start=1):
        header = RULE_HEADER.match(line)
        if header:
            name = header.group(1) or header.group(3)
            rules[name] = Rule(name, path, set(), base=header.group(2))
            current = name
        elif line and not line[0].isspace() and not line.startswith("#"):
            current = None
        owner[number] = current
    file_level: set[str] = set()
    for number, value in _string_groups(text):
        commands = set(COMMAND.findall(value))
        (rules[owner[number]].commands if owner[number] else file_level).update(commands)
    for rule in rules.values():
        rule.commands |= file_level
    return rules


@cache
def all_rules() -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for path in workflow_files():
        rules.update(rules_of(path))
    for rule in rules.values():  # `use rule A as B`: B runs A's shell unless it has its own
        seen = {rule.name}
        base = rule.base
        while base and base in rules and base not in seen:
            rule.commands |= rules[base].commands
            seen.add(base)
            base = rules[base].base
    return rules


def workflow_imports() -> set[str]:
    """mssync modules the Snakefile and .smk files import: Snakemake runs them for every target."""
    statement = re.compile(rf"^[ \t]*((?:from[ \t]+{ROOT_PACKAGE}[\w.]*[ \t]+import[ \t]+(?:\([^)]*\)|.*))"
                           rf"|import[ \t]+{ROOT_PACKAGE}[\w.]*.*)$", re.MULTILINE)
    found = set()
    for path in workflow_files():
        for text in statement.findall(path.read_text()):
            for node in ast.walk(ast.parse(text.strip())):
                if isinstance(node, ast.Import):
                    found |= {alias.name for alias in node.names}
                elif isinstance(node, ast.ImportFrom):
                    found |= {f"{node.module}.{alias.name}" if module_file(f"{node.module}.{alias.name}")
                              else node.module for alias in node.names}
    return found


@cache
def snakemake_targets(cmd: str) -> tuple[str, ...]:
    """The targets of a `snakemake ...` command line, as Snakemake's own argument parser reads them."""
    from snakemake.cli import get_argument_parser

    program, *args = shlex.split(cmd)
    assert Path(program).name == "snakemake", f"{cmd!r}: a DVC stage runs Snakemake on a phase target"
    return tuple(get_argument_parser().parse_args(args).targets)


def stage_rule_files(stage: dict) -> list[Path]:
    """The .smk files defining the rules a stage's `snakemake ... <target>` asks for."""
    rules = all_rules()
    return sorted({rules[target].path for target in snakemake_targets(stage["cmd"]) if target in rules})


def stage_commands(stage: dict) -> set[str]:
    files = stage_rule_files(stage)
    return {cmd for rule in all_rules().values() if rule.path in files for cmd in rule.commands}


# --------------------------------------------------------------------------- the CLI, with ast


def cli_module() -> str:
    """The module of the `mssync` console script (pyproject's [project.scripts])."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    return scripts[ROOT_PACKAGE].split(":")[0]


@dataclasses.dataclass
class Cli:
    path: Path
    tree: ast.Module
    functions: dict[str, ast.FunctionDef]
    imported: dict[str, str]  # module-level `from mssync.x import name` -> mssync.x
    handlers: dict[str, ast.expr]  # command -> the func= expression


def _subparser_name(call: ast.Call) -> list[str]:
    """Command names of an `X.add_parser("name", aliases=[...])` call (empty if not one)."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "add_parser" and call.args
            and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
        return []
    names = [call.args[0].value]
    for keyword in call.keywords:
        if keyword.arg == "aliases" and isinstance(keyword.value, (ast.List, ast.Tuple)):
            names += [elt.value for elt in keyword.value.elts if isinstance(elt, ast.Constant)]
    return names


@cache
def parse_cli() -> Cli:
    path = module_file(cli_module())
    tree = ast.parse(path.read_text(), filename=str(path))
    functions = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    imported = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(ROOT_PACKAGE):
            imported.update({alias.asname or alias.name: node.module for alias in node.names})
    # `p = sub.add_parser("x")` ... `p.set_defaults(func=f)`: pair each set_defaults with the latest
    # add_parser assigned to the same name before it; `sub.add_parser("x").set_defaults(...)` too.
    parsers: list[tuple[int, str, list[str]]] = []  # (line, variable, commands)
    defaults: list[tuple[int, ast.expr, ast.expr]] = []  # (line, receiver, func=)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and _subparser_name(node.value):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    parsers.append((node.lineno, target.id, _subparser_name(node.value)))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "set_defaults":
            for keyword in node.keywords:
                if keyword.arg == "func":
                    defaults.append((node.lineno, node.func.value, keyword.value))
    handlers: dict[str, ast.expr] = {}
    for line, receiver, func in defaults:
        if isinstance(receiver, ast.Call) and _subparser_name(receiver):
            names = _subparser_name(receiver)
        elif isinstance(receiver, ast.Name):
            before = [(n, names) for n, var, names in parsers if var == receiver.id and n <= line]
            names = max(before, key=lambda item: item[0])[1] if before else []
        else:
            names = []
        handlers.update({name: func for name in names})
    return Cli(path, tree, functions, imported, handlers)


def _imports_in(node: ast.AST) -> set[str]:
    """mssync modules imported anywhere inside an ast node of the CLI module."""
    cli = parse_cli()
    lines = {n.lineno for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return {imp.target for imp in mssync_imports(cli.path) if imp.line in lines}


def handler_modules(command: str) -> set[str]:
    """mssync modules a command's handler imports: its own (lazy) imports, those of the CLI
    functions it calls (transitively), the modules of imported names it uses, and the CLI's
    module-level imports (they run on every command)."""
    cli = parse_cli()
    top_level = ast.Module(body=[n for n in cli.tree.body if isinstance(n, (ast.Import, ast.ImportFrom))],
                           type_ignores=[])
    modules = {cli_module(), *_imports_in(top_level)}
    if command not in cli.handlers:
        pytest.fail(f"a rule runs `mssync {command}`, which {cli.path.relative_to(REPO)} does not define "
                    f"(it defines {sorted(cli.handlers)})", pytrace=False)
    todo: list[ast.AST] = [cli.handlers[command]]
    seen: set[str] = set()
    while todo:
        node = todo.pop()
        modules |= _imports_in(node)
        for name in (n.id for n in ast.walk(node) if isinstance(n, ast.Name)):
            if name in cli.functions and name not in seen:
                seen.add(name)
                todo.append(cli.functions[name])
            elif name in cli.imported:
                target = f"{cli.imported[name]}.{name}"
                modules.add(target if module_file(target) else cli.imported[name])
        for attr in (n for n in ast.walk(node) if isinstance(n, ast.Attribute)):  # func=some.module.run
            dotted = ast.unparse(attr.value)
            if dotted.startswith(ROOT_PACKAGE + ".") and module_file(dotted):
                modules.add(dotted)
    return modules


def closure(modules: set[str]) -> set[Path]:
    """Files of the modules and of everything they import, transitively, package __init__s included.

    The CLI module is in it, but its own imports are not followed: handler_modules has picked the
    ones the stage's commands run (the others are lazy imports of other commands).
    """
    files: set[Path] = set()
    todo = list(modules)
    cli = module_file(cli_module())
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py
            path = module_file(".".join(parts[:depth]))
            if path is not None and path not in files:
                files.add(path)
                todo += [imp.target for imp in mssync_imports(path)] if path != cli else []
    return files


def stage_closure(stage: dict) -> set[Path]:
    modules = workflow_imports()
    for command in stage_commands(stage):
        modules |= handler_modules(command)
    return closure(modules)


# --------------------------------------------------------------------------- dvc.yaml


def dvc_stages() -> dict[str, dict]:
    return {name: stage for path in DVC_FILES for name, stage in yaml.safe_load(path.read_text())["stages"].items()}


def covers(deps: list[str], path: Path) -> bool:
    """A dep covers a file when it is the file or a folder above it (path: absolute, or relative to the repo)."""
    rel = path.relative_to(REPO) if path.is_absolute() else path
    return any(rel == Path(dep) or Path(dep) in rel.parents for dep in deps)


def workflow_files_needed(stage: dict) -> set[Path]:
    """The Snakefile, the stage's rule files, every .smk defining a name those files use, and the
    schemas that the stage's code or the workflow files name."""
    files = workflow_files()
    defined: dict[str, Path] = {}
    for path in files[1:]:
        for func, var in DEFINITION.findall(path.read_text()):
            defined.setdefault(func or var, path)
    needed = {SNAKEFILE}
    for path in stage_rule_files(stage):
        needed.add(path)
        words = _names_used(path.read_text())
        needed |= {defined[word] for word in words if word in defined}
    named = "\n".join(p.read_text() for p in [*files, *stage_closure(stage)])
    needed |= {schema for schema in SCHEMAS.glob("*.yaml") if schema.name in named}
    return needed


@pytest.mark.parametrize("name", list(dvc_stages()))
def test_stage_deps_cover_the_import_closure_of_its_commands(name):
    stage = dvc_stages()[name]
    assert stage_commands(stage), f"stage {name}: no `mssync <command>` found in the rules of {stage['cmd']!r}"
    missing = sorted(str(path.relative_to(REPO)) for path in stage_closure(stage) if not covers(stage["deps"], path))
    if missing:
        pytest.fail(f"dvc.yaml stage '{name}' runs {sorted(stage_commands(stage))}, whose imports reach modules "
                    "no dep covers (add their package folder to its deps):\n  " + "\n  ".join(missing), pytrace=False)


@pytest.mark.parametrize("name", list(dvc_stages()))
def test_stage_deps_cover_the_workflow_files_of_its_rules(name):
    stage = dvc_stages()[name]
    missing = sorted(str(p.relative_to(REPO)) for p in workflow_files_needed(stage) if not covers(stage["deps"], p))
    if missing:
        pytest.fail(f"dvc.yaml stage '{name}' ({stage['cmd']}): its rules need workflow files no dep covers:\n  "
                    + "\n  ".join(missing), pytrace=False)


def test_every_stage_targets_a_rule_and_every_code_dep_exists():
    for name, stage in dvc_stages().items():
        unknown = [target for target in snakemake_targets(stage["cmd"]) if target not in all_rules()]
        assert snakemake_targets(stage["cmd"]) and not unknown, f"stage {name}: {stage['cmd']!r}: not rules: {unknown}"
        gone = [dep for dep in stage["deps"] if dep.startswith(("src/", "workflow/", "Snakefile"))
                and not (REPO / dep).exists()]
        assert not gone, f"dvc.yaml stage '{name}': code deps that do not exist: {gone}"


def test_every_command_a_rule_runs_exists_in_the_cli():
    handlers = parse_cli().handlers
    unknown = sorted(f"{rule.path.relative_to(REPO)}: rule {rule.name} runs `mssync {command}`"
                     for rule in all_rules().values() for command in rule.commands if command not in handlers)
    assert handlers, f"no `add_parser(...)` + `set_defaults(func=...)` found in {parse_cli().path}"
    if unknown:
        pytest.fail(f"commands no subparser of {cli_module()} defines (known: {sorted(handlers)}):\n  "
                    + "\n  ".join(unknown), pytrace=False)


def test_the_closure_finds_lazy_imports():
    """Guards the machinery: the gan stage runs train-gan, whose handler imports the trainer lazily."""
    gan = {path.relative_to(SRC).as_posix() for path in stage_closure(dvc_stages()["gan"])}
    assert {"mssync/__init__.py", "mssync/gan/__init__.py", "mssync/gan/train.py"} <= gan, sorted(gan)


# --------------------------------------------------------------------------- for real, with DVC


def _placeholders(root: Path, paths: list[str]) -> None:
    """Empty stand-ins for data deps and outs: a file when the name has a suffix, else a folder."""
    for rel in paths:
        path = root / rel
        if path.exists():
            continue
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("placeholder\n")
        else:
            path.mkdir(parents=True)
            (path / "placeholder").write_text("placeholder\n")


def _out_paths(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for kind in ("outs", "metrics", "plots")
            for o in stage.get(kind, [])]


@pytest.mark.integration
def test_dvc_status_reports_gan_changed_by_a_module_of_its_closure(tmp_path):
    """Record the gan stage without running it (placeholder data, `dvc commit`), then edit code."""
    from test_workflow import make_project, run

    stage = dvc_stages()["gan"]
    inside = sorted(stage_closure(stage))
    edited = SRC / "mssync/gan/train.py"
    edited = edited if edited in inside else inside[-1]
    outside = [p for p in sorted((SRC / ROOT_PACKAGE).glob("*/*.py")) if not covers(stage["deps"], p)]
    outside = [p for p in outside if p.name == "download.py"] or outside  # in a phase package, downloading first

    root = make_project(tmp_path / "project", yaml.safe_load((REPO / "params.yaml").read_text()))
    data_deps = [dep for dep in stage["deps"] if not (root / dep).exists()]  # the copy holds the code, not the data
    _placeholders(root, data_deps + _out_paths(stage))
    run(["dvc", "commit", "-f", "-q", "gan"], root)

    def changed() -> dict:
        return json.loads(run(["dvc", "status", "--json", "gan"], root).stdout or "{}")

    assert changed() == {}, "gan is not up to date right after `dvc commit`"
    if outside:
        with (root / outside[0].relative_to(REPO)).open("a") as f:
            f.write("# edited by test_dvc_deps\n")
        assert changed() == {}, f"editing {outside[0].relative_to(REPO)} (outside gan's deps) changed gan"
    with (root / edited.relative_to(REPO)).open("a") as f:
        f.write("# edited by test_dvc_deps\n")
    status = changed()
    assert "gan" in status, f"editing {edited.relative_to(REPO)} did not change the gan stage: {status}"
    deps = {dep for entry in status["gan"] if isinstance(entry, dict) for dep in entry.get("changed deps", {})}
    assert covers(sorted(deps), edited.relative_to(REPO)), f"gan changed, but not by the dep holding {edited}: {status}"
