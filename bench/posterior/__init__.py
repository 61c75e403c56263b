"""The posterior-approximation track: fit q to a probabilistic model's unnormalised density.

AVB's second claim (Mescheder et al., 2017, Section 6.1 and the authors'
``notebooks/Stan-example.ipynb``): with an implicit q(z) = f(ε) and an adversary, AVB
approximates the posterior of a model known only through its unnormalised log density.
Here non-amortised AVB and AVB-AC stand beside mean-field Gaussian VI and a normalising flow,
each held against a reference: NUTS (pyro-ppl) for the eight-schools model and an exact grid
for the 2-D densities. Layers (``.importlinter``): ``targets`` at the bottom; the
approximations; ``reference`` and ``metrics`` beside them; ``figures``; ``study`` (runs a
preset into records) and ``report`` (table and README) on top.
"""
