"""Ensembles of trained models and the statistics that say whether a difference is real.

- `config`: the ensemble config (members over seeds and folds, combiner, cross-fitting, search);
- `members`: members trained through the shared run cache or read from run directories, checked to
  share one dataset;
- `combiners`: mean, non-negative weights, best member, ridge stacking, and cross-fitting (a combiner
  is never scored on what it was fitted on);
- `ensemble`: the ensemble run and its directory (tools/ensemble.py);
- `compare`: paired bootstrap of two runs or ensembles over the same videos (tools/compare.py).
"""
