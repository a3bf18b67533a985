"""The package layout holds: no import cycle, each package imports only what its docstring allows, small modules.

The import graph is built from the source (every `import` and `from ... import`, at any depth in a module,
so a function-level import counts as much as a top-level one), not by importing anything.
"""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "rewire"
MAX_LINES = 300
MAX_CORE_MODULES = 12


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(path: pathlib.Path, modules: dict) -> set[str]:
  """The rewire modules that `path` imports (for `from pkg import name`, the submodule when it is one)."""
  name = _module_name(path)
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names if a.name.split(".")[0] == "rewire")
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      if base.split(".")[0] != "rewire":
        continue
      for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.add(sub if sub in modules else base)
  out.discard(name)
  return {m for m in out if m in modules}


def graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _imports(path, modules) for name, path in modules.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan), each a cycle of imports."""
  index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in sorted(g[v]):
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
        out.append(sorted(comp))

  for v in sorted(g):
    if v not in index:
      visit(v)
  return out


def test_the_cycle_finder_finds_a_planted_cycle():
  g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert cycles(g) == [["a", "b", "c"]]
  assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_rewire_modules():
  found = cycles(graph())
  assert not found, f"import cycles: {found}"


def _unit(module: str) -> str:
  """A module's package (`rewire.stages`), or `core` for a module directly in rewire/."""
  parts = module.split(".")
  return "core" if len(parts) == 2 and not (ROOT / parts[1]).is_dir() else ".".join(parts[:2])


def _allowed(package: str) -> set[str]:
  """What a package's docstring says it may import (its `May import:` sentence)."""
  doc = ast.get_docstring(ast.parse((ROOT / package.split(".")[1] / "__init__.py").read_text())) or ""
  match = re.search(r"May import:(.*?)(?:\n\n|$)", doc, re.S)
  assert match, f"{package}/__init__.py has no 'May import:' line"
  text = match.group(1).split("Never")[0]
  allowed = set(re.findall(r"rewire\.[a-z_]+", text))
  if "the core" in text:
    allowed.add("core")
  return allowed


def test_every_package_says_what_it_is_for_and_imports_only_what_it_says():
  g = graph()
  packages = sorted({_unit(m) for m in g} - {"core", "rewire"})
  for package in packages:
    doc = ast.get_docstring(ast.parse((ROOT / package.split(".")[1] / "__init__.py").read_text()))
    assert doc and len(doc) > 80, f"{package}/__init__.py needs a docstring saying what the package is for"
  bad = []
  for module, deps in g.items():
    unit = _unit(module)
    if unit == "rewire":
      continue
    allowed = {unit, "rewire.errors"} | (_allowed(unit) if unit != "core" else {"core"})
    for dep in deps:
      dep_unit = _unit(dep)
      if unit == "core" and module == "rewire.main":
        continue  # the command line sits on top of everything
      if dep_unit not in allowed and dep not in allowed:
        bad.append(f"{module} -> {dep}")
  assert not bad, "imports that a package's 'May import:' line does not allow:\n" + "\n".join(sorted(bad))


def test_modules_are_small_and_the_core_is_flat():
  long = {str(p.relative_to(ROOT.parent)): n for p in ROOT.rglob("*.py")
          if (n := len(p.read_text().splitlines())) > MAX_LINES}
  assert not long, f"modules over {MAX_LINES} lines: {long}"
  core = sorted(p.name for p in ROOT.glob("*.py") if p.name != "__init__.py")
  assert len(core) <= MAX_CORE_MODULES, f"{len(core)} modules directly in rewire/: {core}"


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_every_module_says_why_it_exists(path):
  if path.name == "__main__.py" or (path.name == "__init__.py" and path.parent == ROOT):
    assert ast.get_docstring(ast.parse(path.read_text()))
    return
  doc = ast.get_docstring(ast.parse(path.read_text()))
  assert doc and len(doc.split()) >= 8, f"{path} needs a module docstring with its reasons"
