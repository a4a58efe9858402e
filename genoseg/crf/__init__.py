"""Exact semi-Markov CRF engine (DESIGN.md §1).

``reference`` is the float64 ground truth; the public operations dispatch to the fast
engines (see :mod:`genoseg.crf.api`).
"""
