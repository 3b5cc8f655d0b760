"""The training core, what a reader takes in at one sitting: a dataset read and split (data, datasets,
duplicates), batch augmentation (augment), test-time views (tta), the models (models/), the losses, the config of
a run (config), one training loop and its step (train, step; whitening, distill and distributed are options of
it), checkpoints, inference and metrics.

It knows nothing of notebooks, reports/, runs/, git or any command line: the apps around it (reports/, zoo/,
predict/) and the shared modules beside them (paths, recipes, provenance) give it a config, the data and the
folders to write in. tests/test_layers.py holds every import to that.
"""
