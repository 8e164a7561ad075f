"""The import floors of the repository, read from the source (no import runs):

    kernels/ (asgl.kernels)  <-  asgl/  <-  train/ (asgl.train)  <-  perf/

A module may import its own floor and the floors below it, never one above (an import inside a
function counts too). And the one ``sys.path`` edit outside the tests is the four lines that let a
script run as a file from a clone (README, "From a clone").
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLOORS = {"kernels": 0, "asgl": 1, "train": 2, "perf": 3}
NAMES = ("kernels", "asgl", "train", "perf")
# The dotted name each folder has when imported.
PACKAGE = {"kernels": "asgl.kernels", "asgl": "asgl", "train": "asgl.train", "perf": "perf"}


def modules() -> list[Path]:
    return sorted(p for folder in FLOORS for p in (REPO / folder).rglob("*.py"))


def dotted(path: Path) -> str:
    """``train/data/loader.py`` -> ``asgl.train.data.loader`` (a package's ``__init__`` -> the package)."""
    rel = path.relative_to(REPO).with_suffix("")
    parts = [PACKAGE[rel.parts[0]], *rel.parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def floor_of(name: str) -> int | None:
    """The floor of a dotted module name, or None for one outside the repository."""
    if name == "perf" or name.startswith("perf."):
        return FLOORS["perf"]
    if name == "asgl.kernels" or name.startswith("asgl.kernels."):
        return FLOORS["kernels"]
    if name == "asgl.train" or name.startswith("asgl.train."):
        return FLOORS["train"]
    if name == "asgl" or name.startswith("asgl."):
        return FLOORS["asgl"]
    return None


def imported_names(path: Path) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every import in ``path``, relative ones resolved."""
    package = dotted(path) if path.name == "__init__.py" else dotted(path).rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            # each imported name may be a module itself (`from asgl import train`)
            out.append((node.lineno, module))
            out += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return out


def test_the_folders_have_their_floors():
    assert [dotted(REPO / f / "__init__.py") for f in ("kernels", "asgl", "train")] == [
        "asgl.kernels", "asgl", "asgl.train"]
    assert floor_of("asgl.train.run") == 2 and floor_of("asgl.kernels.lif") == 0 and floor_of("asgl.nir") == 1
    assert floor_of("torch") is None and floor_of("perf.static_model") == 3


def test_no_module_imports_a_higher_floor():
    upward = []
    for path in modules():
        own = FLOORS[path.relative_to(REPO).parts[0]]
        for line, name in imported_names(path):
            floor = floor_of(name)
            if floor is not None and floor > own:
                upward.append(f"{path.relative_to(REPO)}:{line} imports {name} ({NAMES[floor]}/ is above "
                              f"{NAMES[own]}/)")
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The walk is not vacuous: a kernel module importing the trainer (even inside a function), or
    asgl importing perf, is found."""
    for folder in ("kernels", "asgl"):
        (tmp_path / folder).mkdir()
    (tmp_path / "kernels" / "bad.py").write_text("def f():\n    from asgl import train\n")
    (tmp_path / "asgl" / "bad.py").write_text("import perf.aot\nfrom . import nir\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert [n for _, n in imported_names(tmp_path / "kernels" / "bad.py")] == ["asgl", "asgl.train"]
    assert [n for _, n in imported_names(tmp_path / "asgl" / "bad.py")] == ["perf.aot", "asgl", "asgl.nir"]
    assert floor_of("asgl.train") > FLOORS["kernels"] and floor_of("perf.aot") > FLOORS["asgl"]


STANZA = '''if __package__ in (None, ""):
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.{up}))'''


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_sys_path_is_edited_only_by_the_clone_stanza(path):
    tree = ast.parse(path.read_text())
    allowed = set()
    for node in tree.body:  # the stanza, at module level, exactly
        if isinstance(node, ast.If) and "__package__" in ast.unparse(node.test):
            text = ast.unparse(node)
            if text in (ast.unparse(ast.parse(STANZA.format(up=up))) for up in ("parent", "parents[1]")):
                allowed |= {id(n) for n in ast.walk(node)}
    stray = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "path"
             and isinstance(n.value, ast.Name) and n.value.id == "sys" and id(n) not in allowed]
    assert not stray, f"{path.relative_to(REPO)}: sys.path outside the clone stanza at lines {stray}"
