"""The package map of doc/developer/packages.rst holds against the code.

The map lists each package, what it holds and what it may import.  This test reads
every module under ``libervia/`` (imports inside functions and ``TYPE_CHECKING`` blocks
included: they are dependencies too) and fails when

* a module lies in no package of the map, or the map names a package that does not
  exist;
* a module imports a package its own may not import;
* modules import each other in a circle (at any depth, inside a package too);
* a plugin imports another plugin it does not declare as a dependency.
"""

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
MAP = ROOT / "doc" / "developer" / "packages.rst"
PLUGINS = "libervia.backend.plugins"

_ROW = re.compile(r"^   \* - (.*)$")
_CELL = re.compile(r"^     - (.*)$")
_CONTINUATION = re.compile(r"^       (.*)$")
_NAME = re.compile(r"``(libervia[\w.]*)``")


@dataclass
class Package:
    name: str
    may_import: set[str] = field(default_factory=set)


def read_map(text: str) -> dict[str, Package]:
    """The packages of the map's table: first cell the package, third what it may
    import (every ``libervia...`` name in it)."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if match := _ROW.match(line):
            rows.append([match[1]])
        elif rows and (match := _CELL.match(line)):
            rows[-1].append(match[1])
        elif rows and (match := _CONTINUATION.match(line)):
            rows[-1][-1] += " " + match[1]
    packages = {}
    for cells in rows[1:]:  # the first row is the header
        assert len(cells) == 3, f"a row of the map has {len(cells)} cells: {cells}"
        names = _NAME.findall(cells[0])
        assert len(names) == 1, f"the first cell names one package: {cells[0]}"
        packages[names[0]] = Package(names[0], set(_NAME.findall(cells[2])))
    return packages


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "libervia").rglob("*.py")):
        if "migration" in path.parts and "versions" in path.parts:
            continue  # Alembic revisions are data, run by the migration environment
        found[module_name(path)] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """The ``libervia`` modules (or names in them) imported anywhere in a module."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # the names imported: modules of the package, or names in the module
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return {i for i in found if i == "libervia" or i.startswith("libervia.")}


def resolve(imported: str, known: dict[str, Path]) -> str | None:
    """The module an imported name lives in (the longest known prefix)."""
    parts = imported.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def owner(module: str, packages: dict[str, Package]) -> str | None:
    """The package of the map a module belongs to (the longest prefix)."""
    best = None
    for name in packages:
        if (module == name or module.startswith(name + ".")) and (
            best is None or len(name) > len(best)
        ):
            best = name
    return best


def graph() -> dict[str, set[str]]:
    known = modules()
    edges = {}
    for name, path in known.items():
        targets = {resolve(i, known) for i in imports(name, path)}
        edges[name] = {t for t in targets if t is not None and t != name}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports, as the list of modules it goes through, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def plugin_unit(module: str) -> str | None:
    """The plugin a module of the plugins package is part of (module or package)."""
    if not module.startswith(PLUGINS + "."):
        return None
    return ".".join(module.split(".")[: len(PLUGINS.split(".")) + 1])


def plugin_info(unit: str, known: dict[str, Path]) -> dict:
    """The literal entries of a plugin's PLUGIN_INFO (in any module of it)."""
    for name, path in known.items():
        if plugin_unit(name) != unit:
            continue
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                    and any(isinstance(t, ast.Name) and t.id == "PLUGIN_INFO"
                            for t in node.targets)):
                info = {}
                for key, value in zip(node.value.keys, node.value.values, strict=True):
                    try:
                        info[ast.literal_eval(key)] = ast.literal_eval(value)
                    except ValueError:
                        continue  # computed entries (modes from constants...)
                return info
    raise AssertionError(f"plugin {unit} has no PLUGIN_INFO")


@pytest.fixture(scope="module")
def packages() -> dict[str, Package]:
    return read_map(MAP.read_text())


def test_the_map_names_every_package_and_only_existing_ones(packages):
    known = modules()
    assert set(packages) <= set(known), (
        f"the map names packages that do not exist: {sorted(set(packages) - set(known))}")
    unplaced = sorted(m for m in known if owner(m, packages) is None)
    assert not unplaced, f"modules in no package of the map: {unplaced}"
    for package in packages.values():
        unknown = package.may_import - set(packages)
        assert not unknown, f"{package.name} may import unknown packages: {unknown}"


def test_every_import_follows_the_map(packages):
    wrong = []
    for module, targets in graph().items():
        source = owner(module, packages)
        for target in targets:
            destination = owner(target, packages)
            if destination != source and destination not in packages[source].may_import:
                wrong.append(f"{module} -> {target} ({source} may not import "
                             f"{destination})")
    assert not wrong, "imports across the map's rules:\n" + "\n".join(sorted(wrong))


def test_no_module_imports_itself_through_others():
    cycle = find_cycle(graph())
    assert cycle is None, "modules importing each other: " + " -> ".join(cycle)


def test_plugins_import_only_the_plugins_they_depend_on():
    known = modules()
    wrong = []
    for module, targets in graph().items():
        unit = plugin_unit(module)
        if unit is None:
            continue
        for target in targets:
            other = plugin_unit(target)
            if other is None or other == unit:
                continue
            info, other_info = plugin_info(unit, known), plugin_info(other, known)
            if other_info["import_name"] not in info.get("dependencies", []):
                wrong.append(f"{module} -> {target}: {info['import_name']} does not "
                             f"depend on {other_info['import_name']}")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_checker_catches_a_forbidden_import_and_a_circle():
    packages = read_map(
        "   * - Package\n     - Holds\n     - May import\n"
        "   * - ``libervia.a``\n     - a\n     - nothing\n"
        "   * - ``libervia.b``\n     - b\n     - ``libervia.a``\n"
    )
    assert packages["libervia.b"].may_import == {"libervia.a"}
    assert "libervia.b" not in packages["libervia.a"].may_import
    assert owner("libervia.b.x.y", packages) == "libervia.b"
    assert find_cycle({"m1": {"m2"}, "m2": {"m3"}, "m3": {"m1"}}) == [
        "m1", "m2", "m3", "m1"]
    assert find_cycle({"m1": {"m2"}, "m2": set()}) is None
