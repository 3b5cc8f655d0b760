"""What a training notebook (a chapter) works with, for one line at its top, as fastai's notebooks import
fastai.vision.all:

    from emo_utils.all import *
    data, report_dir, run_dir = open_chapter(model_name, data_path, report_dir, run_dir)
"""
import pandas as pd

from . import ablation, plots
from .checkpoint import TrainConfig, config_from_recipe, load_trained
from .metrics import prediction_counts, summary_frame
from .notebooks import open_chapter
from .reports import SPLIT_TITLES, comparison_note, markdown_table, provenance, run_summary, write_model_report
from .train import train
from .views import evaluate, scored_views, view_table_frame

__all__ = ["SPLIT_TITLES", "TrainConfig", "ablation", "comparison_note", "config_from_recipe", "evaluate", "load_trained",
           "markdown_table", "open_chapter", "pd", "plots", "prediction_counts", "provenance", "run_summary",
           "scored_views", "summary_frame", "train", "view_table_frame", "write_model_report"]
