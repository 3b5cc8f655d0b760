"""`make reports`: python -m emo_utils.reports [--only 09 10] [-p budget full] [--retrain] [--index-only]
(notebooks.py: every notebook run in order, its executed copy and HTML in reports/, then the leaderboard)."""
import sys

from .notebooks import main

sys.exit(main())
