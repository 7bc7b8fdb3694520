"""The import rule of README's Layout: every import in wsl_ray/ names a module that exists
and points down the rooms' order (imports under `if TYPE_CHECKING:` and inside functions
included), and no modules import each other in a circle."""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "wsl_ray"
ROOMS = ["utils", "methods", "data", "config", "training", "sweep"]  # then the commands


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The wsl_ray modules `name` imports (`from pkg import mod` names the module mod)."""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[: len(package.split(".")) + 1 - node.level])
            target = ".".join(filter(None, [base if node.level else "", node.module or ""]))
            found |= {
                f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target
                for a in node.names
            }
    return {m for m in found if m.startswith("wsl_ray") and m != name}


def rank(name: str) -> int:
    """A module's room's place in ROOMS; the package and the commands come last."""
    room = name.split(".")[1] if name.count(".") else ""
    return ROOMS.index(room) if room in ROOMS else len(ROOMS)


def test_every_import_names_a_module():
    missing = [f"{m} -> {t}" for m in MODULES for t in imports(m) if t not in MODULES]
    assert not missing, "imports of modules that do not exist: " + "; ".join(sorted(missing))


def test_every_import_points_down():
    upward = [f"{m} -> {t}" for m in MODULES for t in imports(m) if rank(t) > rank(m)]
    assert not upward, "imports that point up the rooms' order: " + "; ".join(sorted(upward))


def test_no_module_circle():
    try:
        TopologicalSorter({m: imports(m) for m in MODULES}).prepare()
    except CycleError as err:
        raise AssertionError(f"modules import each other in a circle: {err.args[1]}") from None
