"""The shape of the awsrun package, read from its source: no import circle inside awsrun/, boto3 and
botocore imported only in awsrun/providers/, paramiko only in the SSH layer (awsrun/remote/), and every
dependency pyproject.toml declares imported somewhere.

Imports are read with ast, those inside functions too: a function-level import that closes a circle is a
circle all the same, only found later. Imports under `if TYPE_CHECKING:` never run and are left out.
`from awsrun import x` imports the module awsrun.x; `from awsrun.x import y` imports awsrun.x.y when that
is a module, else awsrun.x (a package's names live in its __init__). The scripts in awsrun/data/ run on
the instance, not in awsrun's process: awsrun/data is no package (it has no __init__.py), and they are not read.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "awsrun"
# distribution name (pyproject.toml) -> the name it is imported by
IMPORT_NAMES = {"click": "click", "boto3": "boto3", "paramiko": "paramiko", "rich": "rich", "tomli": "tomli"}


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under `root` whose path is a module name, in packages only."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        in_packages = all((root / folder / "__init__.py").exists() for folder in path.relative_to(root).parents)
        if in_packages and all(part.isidentifier() for part in parts):
            modules[".".join([package, *parts])] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(path: Path, module: str) -> list[tuple[str, str | None]]:
    """Each import in the file, at any depth, as (module, name imported from it or None); relative
    imports resolved against `module`."""
    found: list[tuple[str, str | None]] = []
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.orelse:
                    visit_statement(statement)
            else:
                visit_statement(child)

    def visit_statement(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            found.extend((target, alias.name) for alias in node.names)
        visit(node)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports."""
    modules = module_files(root, package)
    graph = {}
    for module, path in modules.items():
        targets = set()
        for target, name in imported_names(path, module):
            if name and f"{target}.{name}" in modules:
                targets.add(f"{target}.{name}")
            elif target in modules:
                targets.add(target)
        graph[module] = targets - {module}
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or round a circle (Tarjan's strongly
    connected components of more than one module), each sorted."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def connect(module: str) -> None:
        index[module] = lowest[module] = len(index)
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                connect(target)
                lowest[module] = min(lowest[module], lowest[target])
            elif target in stack:
                lowest[module] = min(lowest[module], index[target])
        if lowest[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            connect(module)
    return sorted(circles)


def third_party_importers(root: Path, package: str, names: set[str]) -> dict[str, set[str]]:
    """Module -> which of the top-level packages `names` it imports."""
    found = {}
    for module, path in module_files(root, package).items():
        used = {target.split(".")[0] for target, _ in imported_names(path, module)} & names
        if used:
            found[module] = used
    return found


def _describe(circles: list[list[str]], graph: dict[str, set[str]]) -> str:
    return "\n".join(f"{' <-> '.join(group)}: " + "; ".join(
        f"{m} imports {', '.join(sorted(graph[m] & set(group)))}" for m in group) for group in circles)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


# the detectors, on packages made to fail them ----------------------------------------------------------

def test_the_detector_finds_a_circle_of_module_level_imports(tmp_path):
    root = _write(tmp_path / "pkg", {
        "__init__.py": "",
        "a.py": "from pkg import b\n",
        "b.py": "from pkg.c import thing\n",
        "c.py": "import pkg.a\nthing = 1\n",
        "d.py": "from pkg import a\n",
    })
    assert import_circles(import_graph(root, "pkg")) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_the_detector_finds_a_circle_closed_inside_a_function_and_skips_type_checking_imports(tmp_path):
    root = _write(tmp_path / "pkg", {
        "__init__.py": "",
        "up.py": "from pkg.sub import helper\n\nclass Run:\n    pass\n",
        "sub/__init__.py": "from pkg.sub.helper import help\n",
        "sub/helper.py": "def help():\n    if True:\n        from ..up import Run\n    return Run\n",
        "typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.plain import P\n",
        "plain.py": "from pkg import typed\nP = 1\n",
    })
    graph = import_graph(root, "pkg")
    assert graph["pkg.sub.helper"] == {"pkg.up"} and graph["pkg.typed"] == set()
    assert import_circles(graph) == [["pkg.sub.helper", "pkg.up"]]


def test_the_detector_finds_a_third_party_import_in_a_function(tmp_path):
    root = _write(tmp_path / "pkg", {
        "__init__.py": "",
        "doctor.py": "def check():\n    from botocore import exceptions\n",
        "ui.py": "import rich.console\n",
    })
    assert third_party_importers(root, "pkg", {"boto3", "botocore"}) == {"pkg.doctor": {"botocore"}}


# awsrun ------------------------------------------------------------------------------------------------

def test_no_import_circle_inside_awsrun():
    graph = import_graph(PACKAGE, "awsrun")
    assert len(graph) > 50  # the scan reads the package, not an empty folder
    circles = import_circles(graph)
    assert circles == [], "modules importing each other in a circle:\n" + _describe(circles, graph)


def test_boto3_and_botocore_are_imported_only_in_providers():
    outside = {module: used for module, used in third_party_importers(PACKAGE, "awsrun", {"boto3", "botocore"}).items()
               if not module.startswith("awsrun.providers.")}
    assert outside == {}


def test_paramiko_is_imported_only_in_the_ssh_layer():
    importers = third_party_importers(PACKAGE, "awsrun", {"paramiko"})
    assert importers and all(module.startswith("awsrun.remote.") for module in importers), importers


def test_every_declared_dependency_is_imported():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    distributions = [re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower() for requirement in declared]
    wanted = {IMPORT_NAMES.get(name, name.replace("-", "_")) for name in distributions}
    imported = {name for used in third_party_importers(PACKAGE, "awsrun", wanted).values() for name in used}
    assert sorted(wanted - imported) == []
