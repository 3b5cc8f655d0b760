"""emo_utils: data, models, one training loop, metrics and reports for facial emotion recognition.

    core/      the training core: data, augment, models, losses, config, the loop and its step, checkpoints,
               inference, metrics. It knows nothing of notebooks, reports/, git or a command line.
    reports/   views, evaluation, ensembles, ablations, robustness, tables, figures, pages, `make reports`
    zoo/       the training command line, the runner behind `make zoo`, a distilled run's teacher
    predict/   `emo-predict`: inputs, faces, detectors, video, tracking, the classifier, ONNX export
    paths.py, recipes.py, provenance.py   what the apps share: every path under reports/ and runs/, a
               notebook's recipe read as data, where a result came from
    all.py     what a notebook imports in its one line

Imports point one way: core imports only core; the shared modules import core; an app imports core, the
shared modules and itself, never another app (tests/test_layers.py).
"""
__version__ = "0.1.0"
