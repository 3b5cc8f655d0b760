"""Imports point one way (emo_utils/__init__.py): the core imports only the core; the shared modules (paths,
recipes, provenance) import the core and each other; an app (reports, zoo, predict) imports the core, the shared
modules and itself, never another app; all.py, what notebooks import, may take from anywhere. The check is tried
on a small package with both kinds of fault first, so it is known to fail when it should."""
import ast
from pathlib import Path

import emo_utils

APPS = ("reports", "zoo", "predict")
SHARED = ("paths", "recipes", "provenance")


def imports_of(path: Path, package: Path) -> list[tuple[int, str]]:
    """(line, part of the package imported: 'core', 'reports', 'paths', ...) for each import of the package."""
    here = ["emo_utils", *path.relative_to(package).with_suffix("").parts]  # a module; __init__ counts as one too
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            dotted = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[:len(here) - node.level] + [node.module or ""]).strip(".") if node.level else node.module
            dotted = [f"{base}.{a.name}" if base == "emo_utils" else base for a in node.names]
        else:
            continue
        found += [(node.lineno, d.split(".")[1]) for d in dotted if d.startswith("emo_utils.")]
    return found


def may_import(source: str, target: str) -> bool:
    if source == "core":
        return target == "core"
    if source in SHARED:
        return target == "core" or target in SHARED
    if source in APPS:
        return target in ("core", source, *SHARED)
    return True  # all.py, __init__.py


def wrong_way_imports(package: Path) -> list[str]:
    problems = []
    for path in sorted(package.rglob("*.py")):
        source = path.relative_to(package).with_suffix("").parts[0]
        problems += [f"{path.relative_to(package)}:{line}: {source} imports {target}"
                     for line, target in imports_of(path, package) if not may_import(source, target)]
    return problems


def test_the_check_finds_the_core_importing_an_app_and_one_app_another(tmp_path):
    package = tmp_path / "emo_utils"
    for folder, name, text in [("core", "a.py", "from ..reports import b\nfrom . import c\n"),
                               ("core", "c.py", "import numpy\n"),
                               ("reports", "b.py", "from ..core.c import x\nfrom ..paths import y\n"),
                               ("zoo", "d.py", "from emo_utils.reports.b import z\nfrom .e import w\n"),
                               (".", "paths.py", "from .core import c\n")]:
        (package / folder).mkdir(parents=True, exist_ok=True)
        (package / folder / name).write_text(text)
    assert wrong_way_imports(package) == ["core/a.py:1: core imports reports", "zoo/d.py:1: zoo imports reports"]


def test_imports_point_from_the_apps_to_the_core_never_back_or_across():
    assert wrong_way_imports(Path(emo_utils.__file__).parent) == []
