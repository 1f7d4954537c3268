"""The layout holds: each package imports only packages below it, and the top of smolcli/ stays small."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# lowest first; a package may import its own modules, smolcli's top level (errors, __version__) and lower packages
LAYERS = (
    "util",
    "models",
    "convert",
    "runtime",
    "doctor",
    "store",
    "api",
    "synthetic",
    "bench",
    "serve",
    "plugins",
    "cli",
)
FOLDERS = {"convert": REPO / "convert", "models": REPO / "models"} | {
    name: REPO / "smolcli" / name for name in LAYERS if name not in ("convert", "models")
}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "smolcli" and len(parts) > 1 and parts[1] in LAYERS:
                found.add(parts[1])
    return found


def test_no_package_imports_one_above_it():
    upward = []
    for package, folder in FOLDERS.items():
        level = LAYERS.index(package)
        for path in sorted(folder.rglob("*.py")):
            for target in imported_packages(path):
                if LAYERS.index(target) > level:
                    upward.append(f"{path.relative_to(REPO)} imports smolcli.{target}")
    assert upward == []


def test_the_layers_are_used_as_declared():
    # the check above sees every package: a renamed or new folder must be placed in LAYERS
    packages = {p.name for p in (REPO / "smolcli").iterdir() if (p / "__init__.py").is_file()}
    assert packages | {"convert", "models"} == set(LAYERS)
    assert imported_packages(REPO / "smolcli" / "cli" / "ask_cmd.py") >= {"api"}
    assert "store" in imported_packages(REPO / "smolcli" / "api" / "resolve.py")


def test_at_most_four_modules_stay_at_the_top():
    modules = sorted(p.name for p in (REPO / "smolcli").glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(modules) <= 4, modules
