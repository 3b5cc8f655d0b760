"""emo_utils: data, models, one training loop, metrics and reports for facial emotion recognition."""
__version__ = "0.1.0"
