"""The practice around one run: hyper-parameter sweeps (``sweep``), k-fold cross-validation
(``cv``) and distillation (``distill``). Each trains through ``adapters.train`` and stores every
adapter it keeps as a version, its lineage saying which sweep, fold or teacher it came from."""
