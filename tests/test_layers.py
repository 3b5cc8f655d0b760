"""Every module's imports, read with ast: each points to its own layer or one below (emo_utils.LAYERS), none
forms a circle, and none sits inside a function unless emo_utils.LAZY_IMPORTS names it. The checker is tried
first on a small package written to tmp_path with each kind of fault, so it is known to fail when it should."""
import ast
from pathlib import Path

import emo_utils

PACKAGE_DIR = Path(emo_utils.__file__).parent


def module_name(path: Path, root: Path) -> str:
    """emo_utils/models/cnn3.py -> 'models': a subpackage is one node (its __init__ and modules import each other)."""
    parts = path.relative_to(root).with_suffix("").parts
    return parts[0] if parts[0] != "__init__" else ""


def project_imports(path: Path, root: Path, package: str):
    """(imported module, line, where) for each import of this package in a file: where is 'module' for an
    import that runs when the module is imported (TYPE_CHECKING ones included), 'function' for one inside a
    function or class body."""
    tree = ast.parse(path.read_text(), filename=str(path))
    modules = {module_name(p, root) for p in root.rglob("*.py")}
    rel = path.relative_to(root).parent.parts  # the package path of this file's folder, below the package

    def targets(node) -> list[str]:
        """The package's top-level modules an import statement names ('' for the package itself)."""
        if isinstance(node, ast.Import):
            return [a.name.split(".")[1] for a in node.names if a.name.startswith(package + ".")]
        if node.level:  # relative: from this file's folder, one folder up per dot after the first
            if node.level - 1 > len(rel):
                return []
            dotted = list(rel[:len(rel) - (node.level - 1)]) + (node.module.split(".") if node.module else [])
        elif node.module == package or (node.module or "").startswith(package + "."):
            dotted = node.module.split(".")[1:]
        else:
            return []
        if dotted:
            return [dotted[0]]
        return [a.name for a in node.names if a.name in modules] or [""]

    found = []

    def visit(node, inside_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((t, child.lineno, "function" if inside_function else "module") for t in targets(child))
            visit(child, inside_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))

    visit(tree, False)
    return found


def import_problems(root: Path, package: str, layers: dict[str, int], lazy: set = frozenset()) -> list[str]:
    """What breaks the layering of the package in folder `root`: a module without a layer, an import of a higher
    layer, an import inside a function that `lazy` does not allow, and every circle of imports."""
    problems, edges = [], {}
    for path in sorted(root.rglob("*.py")):
        source = module_name(path, root)
        if not source:
            continue
        if source not in layers:
            problems.append(f"{path.relative_to(root)}: module {source!r} has no layer in LAYERS")
            continue
        for target, line, where in project_imports(path, root, package):
            if not target or target == source:
                continue
            where_ = f"{path.relative_to(root)}:{line}"
            if target not in layers:
                problems.append(f"{where_}: imports {target!r}, which has no layer in LAYERS")
                continue
            edges.setdefault(source, set()).add(target)
            if layers[target] > layers[source]:
                problems.append(f"{where_}: {source} (layer {layers[source]}) imports {target} "
                                f"(layer {layers[target]}), a higher layer")
            if where == "function" and (source, target) not in lazy:
                problems.append(f"{where_}: {source} imports {target} inside a function; import it at the top")
    problems += [f"circular imports: {' -> '.join(cycle)}" for cycle in cycles(edges)]
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each group of modules that import each other (depth-first search)."""
    found, state = [], {}

    def walk(node, stack):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            walk(node, [node])
    return found


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


GOOD = {"__init__.py": "", "low.py": "import os\n", "mid.py": "from .low import x\nfrom . import low\n",
        "top.py": "from pkg import mid\nfrom pkg.low import y\nimport pkg.low\n",
        "sub/__init__.py": "from . import leaf\n", "sub/leaf.py": "from . import helper\nfrom ..low import z\n"}
GOOD_LAYERS = {"low": 0, "sub": 0, "mid": 1, "top": 2}


def test_the_checker_passes_a_layered_package(tmp_path):
    root = write_package(tmp_path / "pkg", GOOD)
    assert import_problems(root, "pkg", GOOD_LAYERS) == []


def test_the_checker_finds_each_kind_of_fault(tmp_path):
    root = write_package(tmp_path / "pkg", {
        **GOOD,
        "low.py": "from . import mid\n",  # upward, and with mid -> low a circle
        "mid.py": "from .low import x\n\ndef f():\n    from . import top\n",  # upward and inside a function
        "top.py": "import pkg.extra\n",  # a module no layer names
        "extra.py": "",
        "a.py": "from .b import x\n", "b.py": "from . import a\n"})  # a circle inside one layer
    problems = "\n".join(import_problems(root, "pkg", {**GOOD_LAYERS, "a": 1, "b": 1}))
    assert "low.py:1: low (layer 0) imports mid (layer 1), a higher layer" in problems
    assert "mid.py:4: mid (layer 1) imports top (layer 2), a higher layer" in problems
    assert "mid.py:4: mid imports top inside a function" in problems
    assert "module 'extra' has no layer" in problems and "imports 'extra', which has no layer" in problems
    assert "circular imports: low -> mid -> low" in problems
    assert "circular imports: a -> b -> a" in problems


def test_a_lazy_import_is_allowed_only_where_named(tmp_path):
    root = write_package(tmp_path / "pkg", {**GOOD, "top.py": "def main():\n    from . import mid\n"})
    assert import_problems(root, "pkg", GOOD_LAYERS, lazy={("top", "mid")}) == []
    assert import_problems(root, "pkg", GOOD_LAYERS) == ["top.py:2: top imports mid inside a function; import it "
                                                         "at the top"]


def test_emo_utils_imports_point_down_only():
    assert import_problems(PACKAGE_DIR, "emo_utils", emo_utils.LAYERS, emo_utils.LAZY_IMPORTS) == []


def test_every_module_is_in_a_layer_and_every_layer_entry_is_a_module():
    modules = {module_name(p, PACKAGE_DIR) for p in PACKAGE_DIR.rglob("*.py")} - {""}
    assert set(emo_utils.LAYERS) == modules
