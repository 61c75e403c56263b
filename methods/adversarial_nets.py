"""Networks of the AVB authors' code (LMescheder/AdversarialVariationalBayes, last commit),
shared by :mod:`.avb` and :mod:`.avb_ac`: the encoder that adds noise before every layer,
the inner-product adversary, and the noise basis of the adaptive-contrast encoder.

Every network here takes inputs with any number of leading dimensions, so that one call
handles n posterior draws of a whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vaebench.backbones import ACTIVATIONS


def _small_init(layer: nn.Linear, std: float = 1e-5) -> nn.Linear:
    """Weights ~ N(0, std²) (truncation aside) and zero bias: the authors' initialiser for output
    heads (``tf.truncated_normal_initializer(stddev=1e-5)``), which start every head near zero."""
    with torch.no_grad():
        nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(layer.bias)
    return layer


class NoiseEveryLayerMLP(nn.Module):
    """z = f(x, ε) with ε added through a learned linear map before every layer
    (``avb/avb/models/full0.py``: ``add_linear(eps, net)`` before each fully connected layer
    and before the output layer; x is centred to 2x − 1 first).

    The first layer's noise term W₀(2x − 1 + A₀ε) = W₀(2x − 1) + (W₀A₀)ε is computed in the
    folded form, so the data-sized part runs once per example however many draws there are.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, noise_dim: int,
                 activation: str) -> None:
        super().__init__()
        widths = [in_dim, *hidden]
        self.layers = nn.ModuleList(nn.Linear(w, v) for w, v in zip(widths, [*hidden, out_dim]))
        _small_init(self.layers[-1])  # full0.py: the z head starts at ~0
        # noise[k] maps ε to the input of layers[k]; xavier like the authors' add_linear
        self.noise = nn.ModuleList(nn.Linear(noise_dim, w) for w in widths)
        for layer in self.noise:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.activation = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x: (…, in_dim), eps: (…, noise_dim), broadcast against each other."""
        first, noise0 = self.layers[0], self.noise[0]
        folded_weight = first.weight @ noise0.weight  # (hidden₀, noise_dim)
        h = first(2 * x - 1) + nn.functional.linear(eps, folded_weight, first.weight @ noise0.bias)
        for layer, noise in zip(self.layers[1:], self.noise[1:]):
            h = layer(self.activation(h) + noise(eps))
        return h


def _leaky_mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """The authors' adversary branches: fully connected layers with leaky ReLU (slope 0.2)."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class InnerProductAdversary(nn.Module):
    """T(x, z) = ⟨θ(x), s(z)⟩ + T_x(x) + T_z(z) + ½‖z‖² (``avb/avb/models/conv0.py``, ``adversary``).

    θ, s, T_x and T_z are separate leaky-ReLU MLPs (the authors: three layers of 1024, θ and
    s with 8192 features, θ through an ELU, the heads of θ, T_x and T_z initialised at ~0).
    ½‖z‖² is −log N(z; 0, I) up to a constant, so the network only has to learn log q(z|x)
    (``prior_term``; the authors always add it). The x-branches run once per example and
    are shared by every z scored against that x: posterior draws and prior draws alike.
    """

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int], features: int,
                 prior_term: bool = True) -> None:
        super().__init__()
        self.theta = nn.Sequential(_leaky_mlp(data_dim, hidden, features), nn.ELU())
        _small_init(self.theta[0][-1])
        self.s = _leaky_mlp(latent_dim, hidden, features)
        self.t_x = _leaky_mlp(data_dim, hidden, 1)
        _small_init(self.t_x[-1])
        self.t_z = _leaky_mlp(latent_dim, hidden, 1)
        _small_init(self.t_z[-1])
        self.prior_term = prior_term

    def x_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(θ(x), T_x(x)) for x of shape (batch, data_dim)."""
        return self.theta(x), self.t_x(x).squeeze(-1)

    def score(self, features: tuple[torch.Tensor, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """T for z of shape (…, batch, latent_dim) against the x whose features are given: (…, batch)."""
        theta, t_x = features
        t = (theta * self.s(z)).sum(-1) + t_x + self.t_z(z).squeeze(-1)
        return t + 0.5 * z.square().sum(-1) if self.prior_term else t

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.score(self.x_features(x), z)


class NoiseBasis(nn.Module):
    """``count`` independent networks v_i(ε_i), ε_i ~ N(0, I): the noise basis of the adaptive-
    contrast encoder (``avb/avb/models/full0_ac.py``: per basis vector three fully connected
    layers of 128 ELU units and a linear output). All ``count`` networks run as one batched
    matrix product per layer.
    """

    def __init__(self, count: int, noise_dim: int, hidden: Sequence[int], out_dim: int) -> None:
        super().__init__()
        self.count, self.noise_dim = count, noise_dim
        widths = [noise_dim, *hidden, out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            # the default of nn.Linear, per basis network
            bound = w_in ** -0.5
            self.weights.append(nn.Parameter(torch.empty(count, w_in, w_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(count, 1, w_out).uniform_(-bound, bound)))

    def forward(self, eps: torch.Tensor) -> torch.Tensor:
        """eps: (count, …, noise_dim) → v: (count, …, out_dim)."""
        lead = eps.shape[1:-1]
        h = eps.reshape(self.count, -1, self.noise_dim)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(bias, h, weight)
            if i < last:
                h = nn.functional.elu(h)
        return h.reshape(self.count, *lead, -1)

    def sample(self, *shape: int, device: torch.device | None = None) -> torch.Tensor:
        """v for fresh noise: (count, *shape, out_dim)."""
        return self(torch.randn(self.count, *shape, self.noise_dim, device=device))
