"""emo_utils: data, models, one training loop, metrics and reports for facial emotion recognition.

The modules stand in layers, and a module imports only from its own layer or those below, never in a circle
(tests/test_layers.py reads every import and holds them to LAYERS):

    0  data datasets duplicates explore files augment models losses metrics distributed recipes tracking plots
       corruptions paths
    1  checkpoint inference step whitening distill detectors faces
    2  train views ablation ensemble export classifier inputs video notebooks tables leaderboard progress robustness
    3  predict reports zoo zoo_plan all

Layer 0 is what everything stands on (paths.py names every file under reports/ and runs/); 1 reads and writes
weights, runs a forward pass or a training step, initialises a first layer from the data, writes a teacher's
outputs, and finds faces; 2 trains, evaluates, exports and runs notebooks; 3 is the command lines, the reports,
and `all`, what a notebook imports in one line.
"""
__version__ = "0.1.0"

LAYERS = {
    "data": 0, "datasets": 0, "duplicates": 0, "explore": 0, "files": 0, "augment": 0, "models": 0, "losses": 0,
    "metrics": 0, "distributed": 0, "recipes": 0, "tracking": 0, "plots": 0, "corruptions": 0, "paths": 0,
    "checkpoint": 1, "inference": 1, "detectors": 1, "faces": 1, "step": 1, "whitening": 1, "distill": 1,
    "train": 2, "views": 2, "ablation": 2, "ensemble": 2, "export": 2, "classifier": 2, "inputs": 2, "video": 2,
    "notebooks": 2, "tables": 2, "leaderboard": 2, "progress": 2, "robustness": 2,
    "predict": 3, "reports": 3, "zoo": 3, "zoo_plan": 3, "all": 3,
}

# The imports that may sit inside a function, each still downward: `emo-predict --help` and a mistyped argument
# answer before torch (classifier) and scikit-learn (inputs) are imported (tests/test_predict.py checks it).
LAZY_IMPORTS = {("predict", "classifier"), ("predict", "inputs")}
