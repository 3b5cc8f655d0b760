"""The zoo app: the training command line (train: one notebook's recipe, alone or under torchrun), the runner that
trains every notebook's recipe several runs at a time (runner, plan, progress; `make zoo`) or as SLURM jobs (slurm),
what both read of a run's files (run_state), and a distilled run's teacher (teacher). It imports the core and the shared modules (paths, recipes, provenance), never the reports' or
predict's insides.
"""
