"""genoseg: gene annotation with a CNN encoder and an exact streaming semi-Markov CRF."""

__version__ = "0.1.0"
