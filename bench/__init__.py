"""vaebench: a benchmark suite for training variational autoencoders, built around
Adversarial Variational Bayes.

The package maps three folders: ``vaebench`` (core: training, evaluation, studies,
reports) is ``bench/``, ``vaebench.methods`` is ``methods/`` and ``vaebench.datasets``
is ``datasets/``.
"""

__version__ = "0.1.0"
