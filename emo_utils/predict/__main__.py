"""python -m emo_utils.predict: the same as the `emo-predict` console script (cli.py)."""
import sys

from .cli import main

sys.exit(main())
