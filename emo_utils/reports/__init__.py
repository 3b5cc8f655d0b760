"""The reports app: test-time views and evaluation (views), ensembles, ablations, the corruption suite
(corruptions, robustness), tables and figures, each model's README and metrics.json (pages), the leaderboard,
and the papermill runner behind `make reports` (notebooks, __main__). It imports the core and the shared modules
(paths, recipes, provenance), never the zoo's or predict's insides.
"""
