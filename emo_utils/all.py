"""What a notebook (a chapter) works with, for one line at its top, as fastai's notebooks import fastai.vision.all:

    from emo_utils.all import *
    chapter = train_chapter(globals())  # a training notebook: its parameters, trained, evaluated (reports/chapter.py)
"""
import json
from pathlib import Path

import pandas as pd
from IPython.display import Markdown

from . import paths
from .core.checkpoint import load_checkpoint, load_trained
from .core.config import TrainConfig, config_from_recipe
from .core.data import load_dataset
from .core.inference import seconds_per_image
from .core.metrics import most_confused_pairs, prediction_counts, summary_frame
from .core.train import train
from .paths import REPORTS_DIR, trained_models
from .provenance import provenance
from .reports import ablation, plots
from .reports.chapter import ChapterError, open_chapter, train_chapter
from .reports.pages import comparison_note, run_summary, show_headline, write_model_report
from .reports.tables import markdown_table
from .reports.views import SPLIT_TITLES, evaluate, headline_split, load_for_scoring, scored_views, view_table_frame

__all__ = ["Markdown", "Path", "json", "REPORTS_DIR", "SPLIT_TITLES", "TrainConfig", "ablation", "comparison_note",
           "config_from_recipe", "evaluate", "headline_split", "load_checkpoint", "load_dataset", "load_for_scoring",
           "load_trained", "markdown_table", "most_confused_pairs", "open_chapter", "train_chapter", "ChapterError", "paths", "pd", "plots",
           "prediction_counts", "provenance", "run_summary", "scored_views", "show_headline", "seconds_per_image",
           "summary_frame", "train", "trained_models", "view_table_frame", "write_model_report"]
