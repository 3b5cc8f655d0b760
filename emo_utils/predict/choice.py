"""emo-predict's default model, as the frames benchmark chose it, and the numbers `--help` states for it and for
each setting's detector. benchmarks/pipeline_frames.py --write measures them and writes CHOICE_FILE beside this
module; nothing here is typed by hand. No torch: `--help` reads it.
"""
from __future__ import annotations

import json
from pathlib import Path

CHOICE_FILE = Path(__file__).with_name("pipeline_choice.json")
FALLBACK_MODEL = "mini_xception"  # before the benchmark has chosen (a checkout without the file)


def read_choice(path: Path | None = None) -> dict:
    """The benchmark's choice, {} when there is none (or it cannot be read): emo-predict then says so."""
    try:
        return json.loads(Path(path or CHOICE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def default_model(choice: dict) -> str:
    """The report's model with the best pipeline accuracy under the photo default."""
    return choice.get("model", FALLBACK_MODEL)


def model_help(choice: dict) -> str:
    """Why the default model is the default, in the benchmark's numbers."""
    models = choice.get("models", {})
    if not models:
        return f"default: {FALLBACK_MODEL}; the frames benchmark has not chosen one here"
    best = default_model(choice)
    others = "; ".join(f"{name} {m['pipeline']:.1%}" for name, m in models.items() if name != best)
    return (f"default: {best}, the most faces labelled right by the photo pipeline on the frames benchmark "
            f"({choice['faces']} FER2013 test faces in 640x480 frames, a missed face wrong): "
            f"{models[best]['pipeline']:.1%} (on the faces' own crops {models[best]['crop']:.1%}); {others} "
            "(reports/benchmarks.md)")


def setting_help(choice: dict, setting: str, detector: str, every: int) -> str:
    """A setting's measured recall and frames/s, e.g. 'recall 0.95, 9.1 frames/s with one core busy'; nothing
    when the benchmark measured another detector or K than the setting's today."""
    measured = choice.get("settings", {}).get(setting)
    if not measured or not measured["candidate"].startswith(detector) or measured["every"] != every:
        return ""
    speed = f", {measured['fps_busy']:.1f} frames/s with one core busy" if measured.get("fps_busy") else ""
    return f" (recall {measured['recall']:.2f}{speed})"
