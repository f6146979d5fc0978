"""Off-objective evaluation: SW_rK, MMDr and FD in each encoder's space, plus sample metrics.

Nothing here imports the comparison estimators (``rdmx.compare``) or the training engine
(``rdmx.train``): evaluation is written independently of the training objective, so a bug in
the loss cannot hide itself in the score. ``tests/test_evaluate_isolation.py`` enforces it.
"""
