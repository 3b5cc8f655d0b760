"""`make zoo`: python -m emo_utils.zoo [notebook prefixes] [--budget full] [--seeds 09=0,1,2] ... (runner.py)."""
import sys

from .runner import main

sys.exit(main())
