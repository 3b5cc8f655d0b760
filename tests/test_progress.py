"""Training progress where it is read (issue 37, item 5): a widget in JupyterLab, a bar on a terminal, and in a
headless run (papermill, a nohup log) one plain line per epoch on stdout and nothing on stderr, which the page test
(test_report_readability.py) rejects in an executed notebook."""
import sys
import textwrap
import types

import pytest

from emo_utils.core import train as train_module
from emo_utils.core.config import TrainConfig
from emo_utils.core.train import someone_watches, step_bar, train
from synthetic import FAST, make_learnable_data


class FakeKernel:
    def __init__(self, allow_stdin):
        self._allow_stdin = allow_stdin


def pretend_ipython(monkeypatch, shell):
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", fake)


@pytest.mark.parametrize("allow_stdin, expected", [(True, "notebook"), (False, None)])
def test_a_kernel_shows_a_widget_only_to_a_frontend_a_person_types_in(monkeypatch, allow_stdin, expected):
    pretend_ipython(monkeypatch, types.SimpleNamespace(kernel=FakeKernel(allow_stdin)))
    assert someone_watches() == expected


@pytest.mark.parametrize("tty, expected", [(True, "terminal"), (False, None)])
def test_outside_a_kernel_a_bar_only_on_a_terminal(monkeypatch, tty, expected):
    pretend_ipython(monkeypatch, None)  # IPython imported, but no shell running (a plain `python` process)
    monkeypatch.setattr(sys, "stderr", types.SimpleNamespace(isatty=lambda: tty, write=print, flush=lambda: None))
    assert someone_watches() == expected


def test_no_bar_where_no_one_watches_and_none_when_progress_is_off(monkeypatch):
    monkeypatch.setattr(train_module, "someone_watches", lambda: None)
    assert isinstance(step_bar(5, "epoch 1/2", progress=True), range)
    monkeypatch.setattr(train_module, "someone_watches", lambda: "terminal")
    assert isinstance(step_bar(5, "epoch 1/2", progress=False), range)
    bar = step_bar(5, "epoch 1/2", progress=True)
    assert list(bar) == list(range(5)) and bar.desc == "epoch 1/2"
    bar.close()


def test_a_headless_training_prints_one_line_per_epoch_and_nothing_on_stderr(tmp_path, capfd):
    config = TrainConfig(**FAST, epochs=2, scheduler="none")
    train(config, make_learnable_data(train_per_class=8), tmp_path)  # progress on, as a notebook calls it
    out, err = capfd.readouterr()
    assert err == ""
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and "\r" not in out
    assert epoch_lines[0].split()[:2] == ["epoch", "1"] and "val loss" in epoch_lines[0]


BAR_CELL = textwrap.dedent("""
    from emo_utils.core.train import step_bar
    for _ in step_bar(3, "epoch 1/1", progress=True):
        pass
    print("done")
""")
TRAIN_CELL = textwrap.dedent("""
    from emo_utils.core.config import TrainConfig
    from emo_utils.core.train import train
    from synthetic import FAST, make_learnable_data
    result = train(TrainConfig(**FAST, epochs=2, scheduler="none"), make_learnable_data(train_per_class=8), RUN_DIR)
""")


def run_in_a_kernel(allow_stdin: bool, cell: str = BAR_CELL) -> list[dict]:
    """The outputs of a cell run in a real kernel, sent as JupyterLab sends a cell (allow_stdin) or as
    papermill's nbclient does (no stdin)."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3", cwd=str(train_module.Path(__file__).parents[1]))
    outputs = []
    try:
        here = train_module.Path(__file__).parent
        client.execute_interactive(f"import sys; sys.path[:0] = [{str(here.parent)!r}, {str(here)!r}]", timeout=60)
        client.execute_interactive(cell, allow_stdin=allow_stdin, timeout=300,
                                   output_hook=lambda msg: outputs.append(msg))
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    return [msg for msg in outputs if msg["msg_type"] in ("stream", "display_data", "error")]


@pytest.mark.slow
def test_in_a_real_kernel_jupyterlab_gets_a_widget_and_papermill_plain_output():
    headless = run_in_a_kernel(allow_stdin=False)
    assert [m["content"].get("name") for m in headless] == ["stdout"]
    assert headless[0]["content"]["text"] == "done\n"
    lab = run_in_a_kernel(allow_stdin=True)
    assert not [m for m in lab if m["content"].get("name") == "stderr" or m["msg_type"] == "error"], lab
    widgets = [m for m in lab if m["msg_type"] == "display_data"]
    assert widgets and "application/vnd.jupyter.widget-view+json" in widgets[0]["content"]["data"]


@pytest.mark.slow
def test_a_fresh_training_run_by_papermill_writes_its_epoch_lines_and_nothing_on_stderr(tmp_path):
    outputs = run_in_a_kernel(allow_stdin=False, cell=f"RUN_DIR = {str(tmp_path)!r}\n" + TRAIN_CELL)
    assert {m["content"].get("name") for m in outputs} == {"stdout"}, outputs  # no stderr, no widget, no error
    lines = "".join(m["content"]["text"] for m in outputs).splitlines()
    assert [line.split()[:2] for line in lines if line.startswith("epoch ")] == [["epoch", "1"], ["epoch", "2"]]
