"""The form notebooks/ are committed in (issue 37, item 6): the bytes JupyterLab writes when it saves a notebook,
less what a run adds, so that opening, running and saving one in JupyterLab leaves `git status` clean.

Three pieces keep it so:
  - the form: nbformat.read + nbformat.write, as JupyterLab's contents manager saves (indent 1, sorted keys, a
    trailing newline, each cell's id kept), without outputs, execution counts or the kernel's language_info;
  - the git filter that strips what a run adds on every commit: nbstripout (the ecosystem's tool), installed into
    the repository's git config by `make setup` (install_filter) and applied to notebooks/ only by .gitattributes.
    reports/*.ipynb are the executed records and keep their outputs;
  - a save hook for JupyterLab's server (refresh_git_index, installed by `make setup` in this environment's Jupyter
    config): git compares a file's size before it runs a filter, so a notebook saved with outputs is listed as
    modified by `git status` although the filter leaves nothing to commit; the hook refreshes git's index for a
    saved notebook whose only changes the filter strips, and for nothing else.
And the executed copies `make reports` writes (reports/*.ipynb) carry no absolute path of the machine that ran
them (without_machine_paths): papermill records the notebook's and its copy's paths and the parameters.

    python -m emo_utils.reports.nbform [--check] [NOTEBOOK ...]   rewrite (or check) notebooks/ in that form
    python -m emo_utils.reports.nbform --install-filter            the git filter and JupyterLab's save hook
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import nbformat

# What nbstripout 0.9 strips besides outputs and execution counts (its built-in list), then ours: the kernel's
# language_info, which JupyterLab writes into a notebook as soon as a kernel starts (its Python version, so it
# differs between machines), while the kernelspec already names the kernel.
NBSTRIPOUT_DEFAULT_KEYS = ("metadata.signature", "metadata.widgets", "cell.metadata.collapsed",
                           "cell.metadata.ExecuteTime", "cell.metadata.execution", "cell.metadata.heading_collapsed",
                           "cell.metadata.hidden", "cell.metadata.scrolled")
EXTRA_KEYS = ("metadata.language_info",)


def committed_form(nb: nbformat.NotebookNode) -> str:
    """The notebook as the git filter commits it and JupyterLab saves it: no outputs, no counts, none of the keys
    above, cell ids kept (nbstripout --keep-id: ids Jupyter gave stay, so inserting a cell changes one line)."""
    from nbstripout import strip_output

    stripped = strip_output(nb, keep_output=False, keep_count=False, keep_id=True,
                            extra_keys=[*NBSTRIPOUT_DEFAULT_KEYS, *EXTRA_KEYS])
    return jupyter_bytes(stripped)


def jupyter_bytes(nb: nbformat.NotebookNode) -> str:
    """What JupyterLab's save writes for this notebook: nbformat.write's text (writes + a trailing newline)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # nbformat's note on ids it had to add
        text = nbformat.writes(nb, version=nbformat.NO_CONVERT)
    return text if text.endswith("\n") else text + "\n"


def read(path: Path) -> nbformat.NotebookNode:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def rewrite(paths: list[Path], check: bool = False) -> list[Path]:
    """The notebooks not in committed_form; rewritten into it unless `check`."""
    changed = []
    for path in paths:
        text = committed_form(read(path))
        if path.read_text(encoding="utf-8") != text:
            changed.append(path)
            if not check:
                path.write_text(text, encoding="utf-8")
    return changed


# ---------------------------------------------------------------- executed notebooks

INJECTED_TAG = "injected-parameters"  # papermill's cell of the parameters it was given


def without_machine_paths(executed: Path, run_in: Path, root: Path | None = None) -> None:
    """An executed notebook (reports/*.ipynb) with no absolute path of this machine in papermill's record: the
    notebook and its executed copy relative to the repository, a parameter's path relative to the folder the
    notebook ran in (notebooks/, so the injected cell still names the same file), in the record and the cell."""
    if root is None:
        from ..core.data import REPO_ROOT as root
    nb = read(executed)
    record = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if isinstance(record.get(key), str) and os.path.isabs(record[key]):
            record[key] = os.path.relpath(record[key], root)
    injected = [cell for cell in nb.cells if INJECTED_TAG in cell.get("metadata", {}).get("tags", [])]
    for name, value in record.get("parameters", {}).items():
        if isinstance(value, str) and os.path.isabs(value):
            record["parameters"][name] = os.path.relpath(value, run_in)
            for cell in injected:
                cell.source = cell.source.replace(value, record["parameters"][name])
    with open(executed, "w", encoding="utf-8") as f:
        f.write(jupyter_bytes(nb))


# ---------------------------------------------------------------- the git filter

def filter_config(python: str = sys.executable) -> dict[str, str]:
    """The git config of the nbstripout filter, as `nbstripout --install` writes it, with --keep-id and our keys.
    The attributes are not installed here: .gitattributes (committed) scopes the filter to notebooks/."""
    command = f'"{python}" -m nbstripout'
    return {"filter.nbstripout.clean": f"{command} --keep-id",
            "filter.nbstripout.smudge": "cat",
            "filter.nbstripout.required": "true",
            "filter.nbstripout.extrakeys": " ".join(EXTRA_KEYS),
            "diff.ipynb.textconv": f"{command} --keep-id -t"}


def install_filter(repo: Path, python: str = sys.executable) -> None:
    """Write the filter into the repository's own git config (`git config --local`)."""
    for key, value in filter_config(python).items():
        subprocess.run(["git", "-C", str(repo), "config", "--local", key, value], check=True)


def shown(path: Path) -> str:
    """A path as the user would type it from here: relative to the current folder when it is under it."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def git_output(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True)


def refresh_git_index(os_path: str, **_) -> subprocess.Popen | None:
    """JupyterLab's post-save hook: a tracked notebook under the nbstripout filter whose committed form equals
    the index's is re-added (which stages nothing), so `git status` stops listing it; any other save is left alone.
    The add runs the filter (a second or two): it runs detached, so the save returns at once and a server
    stopped right after still lets it finish; it checks again, through the filter, that it stages nothing."""
    path = Path(os_path)
    if path.suffix != ".ipynb":
        return None
    folder, name = path.parent, path.name
    if not git_output(folder, "check-attr", "filter", "--", name).stdout.strip().endswith(": nbstripout"):
        return None
    indexed = git_output(folder, "cat-file", "blob", f":./{name}")
    if indexed.returncode or indexed.stdout != committed_form(read(path)):  # untracked, or a change to commit
        return None
    # Another save's add may hold git's index.lock a moment: a few tries, a second apart.
    script = 'for try in 1 2 3 4 5; do git diff --quiet -- "$1" || exit 1; git add -- "$1" && exit 0; sleep 1; done; exit 1'
    return subprocess.Popen(["sh", "-c", script, "sh", name], cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


# By its import path, not __name__: make setup runs this module as __main__, a name JupyterLab cannot import.
HOOK = "emo_utils.reports.nbform.refresh_git_index"


def install_save_hook(prefix: str = sys.prefix) -> Path:
    """The hook in this environment's Jupyter server config (etc/jupyter/jupyter_server_config.json, which a
    JupyterLab started from .venv reads; its .d folder holds only extensions), kept beside any other setting."""
    path = Path(prefix) / "etc" / "jupyter" / "jupyter_server_config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    config.setdefault("ContentsManager", {})["post_save_hook"] = HOOK
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=1) + "\n")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emo_utils.reports.nbform", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook in notebooks/")
    parser.add_argument("--check", action="store_true", help="only list the notebooks not in that form (exit 1)")
    parser.add_argument("--install-filter", action="store_true",
                        help="install the nbstripout git filter into this clone's git config and JupyterLab's "
                             "save hook into this environment (make setup does)")
    args = parser.parse_args(argv)
    if args.install_filter:
        repo = Path(__file__).resolve().parents[2]
        if subprocess.run(["git", "-C", str(repo), "rev-parse", "--git-dir"], capture_output=True).returncode:
            print(f"nbform: {repo} is not a git clone; no filter to install (a copy without git commits nothing)")
            return 0
        install_filter(repo)
        hook = install_save_hook()
        print(f"nbform: nbstripout filter installed in {repo}'s git config (notebooks/ per .gitattributes), "
              f"JupyterLab's save hook in {hook}")
        return 0
    from ..paths import NOTEBOOKS  # here, not above: JupyterLab's server imports this module for its save hook

    paths = args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    changed = rewrite(paths, check=args.check)
    verb = "not in Jupyter's committed form" if args.check else "rewritten"
    for path in changed:
        print(f"{verb}: {shown(path)}")
    if args.check and changed:
        print("fix: python -m emo_utils.reports.nbform " + " ".join(shown(p) for p in changed))
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
