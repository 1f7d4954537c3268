"""The house keeps its shape: no import cycle between our modules, no module reaching into another's private names,
and every benchmark script still imports. Read from the syntax tree, so nothing here loads a model."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# where each import root's modules live (convert/ and models/ install under smolcli)
ROOTS = {"smolcli": REPO / "smolcli", "smolcli.convert": REPO / "convert", "smolcli.models": REPO / "models"}

# Private names of other libraries that we use on purpose, as `root.name` (root: the expression's first name).
# Our own objects' private names are never reached into from another module: a name another module needs is public.
THIRD_PARTY_PRIVATES = {
    "os._exit",  # leaving a forked or signalled child without running Python's teardown
}

# Reach-ins still to mend, as "path: expression". This list only shrinks: an entry that no longer occurs fails too.
STILL_TO_MEND: set[str] = set()

# Import cycles still to break, each as its sorted modules; this list only shrinks too.
CYCLES_TO_BREAK: list[list[str]] = []


def modules() -> dict[str, Path]:
    found = {}
    for root, folder in ROOTS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([root, *parts])
            if root == "smolcli" and parts[:1] in (["convert"], ["models"]):
                continue
            found[name] = path
    return found


def type_checking_nodes(tree: ast.AST) -> set[int]:
    """Nodes under `if TYPE_CHECKING:`: annotations only, never executed, so no cycle at run time."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(inner) for inner in ast.walk(node)}
    return skipped


def import_graph() -> dict[str, set[str]]:
    """Module -> our modules it imports anywhere (functions included: an import hidden in a function is still one)."""
    known = modules()

    def owner(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        skipped = type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("smolcli"):
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names if alias.name.startswith("smolcli")]
            else:
                continue
            for target in filter(None, map(owner, targets)):
                # a package's own __init__ is imported on the way to any of its modules: not an edge of its own
                if target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def private_reach_ins() -> set[str]:
    """`x._name` where x is not self or cls, and `from smolcli... import _name`, in every module of ours."""
    found = set()
    for path in modules().values():
        where = path.relative_to(REPO)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and ((node.module or "").startswith("smolcli") or node.level):
                found |= {f"{where}: import {a.name}" for a in node.names if is_private(a.name)}
            elif isinstance(node, ast.Attribute) and is_private(node.attr):
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    continue
                expression = ast.unparse(node)
                if expression not in THIRD_PARTY_PRIVATES:
                    found.add(f"{where}: {expression}")
    return found


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_import_cycle_among_our_modules():
    found = cycles(import_graph())
    assert [c for c in found if c not in CYCLES_TO_BREAK] == []
    assert [c for c in CYCLES_TO_BREAK if c not in found] == [], "broken: take these off CYCLES_TO_BREAK"


def test_the_cycle_check_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_reaches_into_another_ones_private_names():
    found = private_reach_ins()
    assert sorted(found - STILL_TO_MEND) == []
    assert sorted(STILL_TO_MEND - found) == [], "mended: take these off STILL_TO_MEND"


def test_every_benchmark_script_imports():
    """Each script's top level runs (its imports, constants, argument parser), in a child so that the fast lane's
    no-torch rule holds here; main() is not called."""
    scripts = sorted((REPO / "benchmarks").glob("*.py"))
    program = (
        "import importlib.util, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "for path in sys.argv[2:]:\n"
        "    spec = importlib.util.spec_from_file_location('bench_' + path.rsplit('/', 1)[-1][:-3], path)\n"
        "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "    print('imported', path)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(REPO / "benchmarks"), *map(str, scripts)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("imported ") == len(scripts) > 10
