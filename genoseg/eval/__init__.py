"""Comparison of annotations with a reference: accuracy levels, calibration, region plots."""

from genoseg.eval.calibration import Calibration, CalibrationBin, calibrate, calibration_report
from genoseg.eval.compare import GENE_RULES, LEVELS, EvalResult, LevelStats, compare, models_of

__all__ = [
    "GENE_RULES",
    "LEVELS",
    "Calibration",
    "CalibrationBin",
    "EvalResult",
    "LevelStats",
    "calibrate",
    "calibration_report",
    "compare",
    "models_of",
]
