"""Exact semi-Markov CRF engine (DESIGN.md §1).

Public operations: :func:`log_partition`, :func:`marginals`, :func:`viterbi`, :func:`nll`,
:func:`partial_nll`, :func:`chain_marginals` (exact segment/chain posteriors),
:func:`score_marginals` / :func:`expected_score` (cross-entropy between two models' paths)
(dispatching to the CPU engine or the Triton kernels), the streaming
:class:`ForwardStream`, :class:`ViterbiStream` and :class:`PosteriorStream` for
contigs processed chunk by chunk, and the float64
``reference`` module that is the ground truth for tests.
"""

from genoseg.crf.api import (
    SCORED_INPUTS,
    Marginals,
    chain_marginals,
    expected_score,
    log_partition,
    marginals,
    nll,
    partial_nll,
    score_marginals,
    segmentation_score,
    viterbi,
)
from genoseg.crf.inputs import CRFInputs, check_inputs
from genoseg.crf.stream import ForwardStream, PosteriorStream, ViterbiStream

__all__ = [
    "SCORED_INPUTS",
    "CRFInputs",
    "ForwardStream",
    "PosteriorStream",
    "ViterbiStream",
    "Marginals",
    "chain_marginals",
    "check_inputs",
    "expected_score",
    "log_partition",
    "marginals",
    "nll",
    "partial_nll",
    "score_marginals",
    "segmentation_score",
    "viterbi",
]
