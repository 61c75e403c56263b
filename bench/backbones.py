"""The networks every method shares, so that methods differ only in how they train.

A backbone builds an encoder body (x, plus optional extra inputs such as noise, to a
vector) and the decoder (z to Bernoulli logits). All methods in a study get the same
backbone and the identical decoder architecture, which is what makes a comparison fair.
Backbones register by name; add one with ``@BACKBONES.register("name")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import math

import torch
from torch import nn

from .config import NEW_OPTION, require
from .registry import Registry

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU,
}


@dataclass(frozen=True)
class Architecture:
    """The shared network architecture of a study.

    ``backbone``: a registered backbone name (``mlp``, ``conv``, ``gated``). ``hidden``: widths
    of the hidden layers of encoder, decoder and adversary bodies. ``activation``: their
    nonlinearity. The ``conv`` backbone has the AVB authors' fixed MNIST architecture and
    ignores ``hidden`` and ``activation``; the ``gated`` backbone (the VampPrior authors' gated
    dense layers) has no activation but its gates and ignores ``activation``.

    ``init``: the initial weights of the ``mlp`` and ``gated`` backbones' encoder and decoder:
    ``torch`` (PyTorch's default), ``glorot`` (uniform on ±sqrt(6 / (fan_in + fan_out)), Glorot &
    Bengio 2010, with zero biases) or ``he`` (normal with standard deviation sqrt(2 / fan_in), He
    et al. 2015, biases left at PyTorch's default: the VampPrior authors' ``he_init``). ``output_bias``: the decoder's output bias, ``init``
    (as the scheme above leaves it) or ``mean-logit``: the logit of the mean training image,
    clipped to [0.001, 0.999] (Burda et al. 2016), set from the training split when
    training starts.

    Two choices of the ``conv`` backbone only, after the AVB authors' networks of those names
    (LMescheder/AdversarialVariationalBayes): ``conv_decoder``, ``conv1`` (``avb/decoders/conv1.py``,
    the decoder of their VAE baseline) or ``conv0`` (``avb/decoders/conv0.py``, the decoder of
    every AVB MNIST script); ``conv_encoder_batch_norm``: batch norm after the encoder's first
    three convolutions, as their ``conv0_ac`` encoder body has; their plain-AVB ``conv0``
    encoder, which adds noise after every convolution, has none.
    """

    backbone: str = "mlp"
    hidden: tuple[int, ...] = (300, 300)
    activation: Literal["relu", "elu", "softplus", "tanh", "leaky_relu"] = "relu"
    init: Literal["torch", "glorot", "he"] = "torch"
    output_bias: Literal["init", "mean-logit"] = "init"
    conv_decoder: Literal["conv1", "conv0"] = field(default="conv1", metadata=NEW_OPTION)
    conv_encoder_batch_norm: bool = field(default=True, metadata=NEW_OPTION)

    def __post_init__(self) -> None:
        require(len(self.hidden) > 0 and all(h > 0 for h in self.hidden),
                f"hidden layer widths must be positive, got {list(self.hidden)}")
        require(self.backbone in BACKBONES,
                f"unknown backbone {self.backbone!r}; registered backbones: {', '.join(BACKBONES.names())}")
        # on another backbone they would do nothing, silently
        for name, default in (("conv_decoder", "conv1"), ("conv_encoder_batch_norm", True)):
            require(self.backbone == "conv" or getattr(self, name) == default,
                    f"{name} applies to the conv backbone only, and backbone is {self.backbone!r}")


def glorot_init_(module: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases for every ``nn.Linear`` in ``module``, in place."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return module


def he_init_(module: nn.Module) -> nn.Module:
    """He-normal weights, N(0, 2 / fan_in), for every ``nn.Linear`` in ``module``, in place; biases
    keep PyTorch's default (as ``he_init`` in the VampPrior authors' ``utils/nn.py``)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / layer.in_features))
    return module


#: the weight schemes of ``Architecture.init`` other than PyTorch's default, by name
INITS = {"glorot": glorot_init_, "he": he_init_}


def init_weights_(module: nn.Module, scheme: str) -> nn.Module:
    """``module`` with the weights of ``Architecture.init`` = ``scheme`` (``torch`` leaves them)."""
    return INITS[scheme](module) if scheme in INITS else module


#: the clip of the mean pixel before its logit becomes the decoder's output bias (Burda et al.)
MEAN_CLIP = (0.001, 0.999)


@torch.no_grad()
def set_output_bias_to_mean_logit(decoder_net: nn.Module, train: torch.Tensor) -> None:
    """Set the bias of the decoder's last linear layer to logit(clip(mean of ``train``)).

    ``train``: (N, D) training images; D must be the layer's output width.
    """
    layers = [m for m in decoder_net.modules() if isinstance(m, nn.Linear)]
    require(bool(layers) and layers[-1].out_features == train.shape[-1],
            "architecture.output_bias = 'mean-logit' needs a decoder that ends in a linear layer "
            "over the pixels (the mlp backbone)")
    mean = train.mean(0, dtype=torch.float64).clamp(*MEAN_CLIP)
    layers[-1].bias.copy_(torch.logit(mean))


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "relu") -> nn.Sequential:
    """A fully connected network; works on any number of leading batch dimensions."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class Backbone(Protocol):
    def encoder(self, arch: Architecture, data_shape: tuple[int, ...], out_dim: int,
                extra_dim: int = 0) -> nn.Module:
        """A network mapping (x flattened, extra) → out_dim; ``extra`` is e.g. AVB's noise."""

    def decoder(self, arch: Architecture, latent_dim: int, data_shape: tuple[int, ...]) -> nn.Module:
        """A network mapping z (…, latent_dim) → Bernoulli logits (…, prod(data_shape))."""


class ConcatMLP(nn.Module):
    """An MLP on the concatenation of its inputs (broadcast over leading dimensions)."""

    def __init__(self, in_dims: Sequence[int], hidden: Sequence[int], out_dim: int, activation: str) -> None:
        super().__init__()
        self.net = mlp(sum(in_dims), hidden, out_dim, activation)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) > 1:
            shape = torch.broadcast_shapes(*(t.shape[:-1] for t in inputs))
            inputs = tuple(t.expand(*shape, t.shape[-1]) for t in inputs)
        return self.net(torch.cat(inputs, dim=-1))


BACKBONES: Registry[Backbone] = Registry("backbone")


@BACKBONES.register("mlp")
class MLPBackbone:
    """Fully connected encoder and decoder with ``arch.hidden`` layers (decoder mirrored)."""

    def encoder(self, arch: Architecture, data_shape: tuple[int, ...], out_dim: int,
                extra_dim: int = 0) -> nn.Module:
        dim = int(torch.Size(data_shape).numel())
        net = ConcatMLP([dim, extra_dim] if extra_dim else [dim], arch.hidden, out_dim, arch.activation)
        return init_weights_(net, arch.init)

    def decoder(self, arch: Architecture, latent_dim: int, data_shape: tuple[int, ...]) -> nn.Module:
        dim = int(torch.Size(data_shape).numel())
        net = mlp(latent_dim, tuple(reversed(arch.hidden)), dim, arch.activation)
        return init_weights_(net, arch.init)


class GatedDense(nn.Module):
    """A gated dense layer, h = (W x + b) · σ(V x + c) (Dauphin et al. 2017's gated linear unit),
    as ``GatedDense`` in the VampPrior authors' ``utils/nn.py`` with no activation: ``h`` is the
    linear map W, b and ``g`` the gate's V, c, two ``nn.Linear`` layers as theirs, so that an
    optimizer that treats each tensor on its own (their AdamNormGrad) sees their tensors.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.h = nn.Linear(in_dim, out_dim)
        self.g = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


class SplitLinear(nn.Module):
    """A linear map whose output halves are two ``nn.Linear`` layers (``first``, ``second``), their
    outputs concatenated: the VampPrior authors' encoder head, ``q_z_mean`` and ``q_z_logvar``, as
    separate tensors for an optimizer that treats each tensor on its own (their AdamNormGrad)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.first = nn.Linear(in_dim, out_dim // 2)
        self.second = nn.Linear(in_dim, out_dim - out_dim // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.first(x), self.second(x)], dim=-1)


def gated_mlp(in_dim: int, hidden: Sequence[int], out_dim: int, split_output: bool = False) -> nn.Sequential:
    """Gated dense layers of widths ``hidden``, then a linear map to ``out_dim`` (a
    :class:`SplitLinear` with ``split_output``)."""
    widths = [in_dim, *hidden]
    layers: list[nn.Module] = [GatedDense(a, b) for a, b in zip(widths, widths[1:])]
    layers.append(SplitLinear(widths[-1], out_dim) if split_output else nn.Linear(widths[-1], out_dim))
    return nn.Sequential(*layers)


class ConcatGatedMLP(nn.Module):
    """:func:`gated_mlp` on the concatenation of its inputs (broadcast over leading dimensions)."""

    def __init__(self, in_dims: Sequence[int], hidden: Sequence[int], out_dim: int) -> None:
        super().__init__()
        self.net = gated_mlp(sum(in_dims), hidden, out_dim, split_output=out_dim % 2 == 0)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) > 1:
            shape = torch.broadcast_shapes(*(t.shape[:-1] for t in inputs))
            inputs = tuple(t.expand(*shape, t.shape[-1]) for t in inputs)
        return self.net(torch.cat(inputs, dim=-1))


@BACKBONES.register("gated")
class GatedBackbone:
    """The VampPrior authors' MLP (jmtomczak/vae_vampprior, ``models/VAE.py``): ``arch.hidden``
    gated dense layers (:class:`GatedDense`, no other nonlinearity) in the encoder, mirrored in
    the decoder, each followed by a linear output layer; ``arch.activation`` does not apply.

    Their encoder has two output layers, the mean and the log-variance (300 → 40 each); here an
    encoder of even output width ends in the same two layers (:class:`SplitLinear`), one per
    half of its output, which the Gaussian encoder reads as [μ, σ's parameter]. Their decoder ends
    in a sigmoid over the pixels; here it gives the logits, which the shared Bernoulli decoder
    reads. With ``init = "he"`` the weights are theirs (He-normal, biases at PyTorch's default).
    """

    def encoder(self, arch: Architecture, data_shape: tuple[int, ...], out_dim: int,
                extra_dim: int = 0) -> nn.Module:
        dim = int(torch.Size(data_shape).numel())
        net = ConcatGatedMLP([dim, extra_dim] if extra_dim else [dim], arch.hidden, out_dim)
        return init_weights_(net, arch.init)

    def decoder(self, arch: Architecture, latent_dim: int, data_shape: tuple[int, ...]) -> nn.Module:
        dim = int(torch.Size(data_shape).numel())
        return init_weights_(gated_mlp(latent_dim, tuple(reversed(arch.hidden)), dim), arch.init)


def _image_shape(data_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, height, width) of square images given as (H, W) or (C, H, W)."""
    require(len(data_shape) in (2, 3) and data_shape[-1] == data_shape[-2],
            f"the conv backbone needs square images of shape (H, W) or (C, H, W), got {data_shape}")
    return (1, *data_shape) if len(data_shape) == 2 else tuple(data_shape)  # type: ignore[return-value]


class AddLinear(nn.Module):
    """Adds a linear function of a vector (AVB's noise ε) to a feature map, as ``add_linear``
    in the AVB authors' code: this is how their encoder injects noise at every scale."""

    def __init__(self, extra_dim: int, feature_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.feature_shape = feature_shape
        self.linear = nn.Linear(extra_dim, math.prod(feature_shape))

    def forward(self, features: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        return features + self.linear(extra).unflatten(-1, self.feature_shape)


class ConvEncoder(nn.Module):
    """The AVB authors' MNIST convolutional encoder (``avb/avb/models/conv0.py``).

    x ↦ 2x − 1; four 5×5 convolutions with ``channels``·(1, 2, 4, 8) maps, the last
    ``n_down`` of them with stride 2 (two for 28×28); after each one the optional extra
    input is added through a linear map (``add_linear``), then, with ``batch_norm``, batch
    norm (not after the last), and ELU; a linear layer maps the flattened features to
    ``out_dim``. Without extra input and with batch norm this is the body of the authors'
    ``conv0_ac`` encoder; with extra input and without batch norm, their ``conv0`` encoder.

    Inputs are flattened images (…, C·H·W) and optionally extra vectors (…, extra_dim),
    broadcast over their leading dimensions. The first convolution runs once per image,
    before broadcasting, since the extra input only enters after it.
    The authors' ``conv1`` variant adds residual blocks at each scale; we leave them out
    to keep the backbone affordable on a CPU.
    """

    def __init__(self, data_shape: tuple[int, ...], out_dim: int, extra_dim: int = 0,
                 channels: int = 64, batch_norm: bool = True) -> None:
        super().__init__()
        self.image_shape = _image_shape(data_shape)
        c, size, _ = self.image_shape
        n_down = max(min(int(math.log2(size)) - 2, 4), 0)
        strides = [1] * (4 - n_down) + [2] * n_down
        self.extra_dim = extra_dim
        self.convs = nn.ModuleList()
        self.adds = nn.ModuleList()
        self.norms = nn.ModuleList()
        width_in = c
        for i, stride in enumerate(strides):
            width = channels * 2 ** i
            self.convs.append(nn.Conv2d(width_in, width, 5, stride=stride, padding=2))
            size = (size - 1) // stride + 1  # 'SAME' padding: ceil(size / stride)
            if extra_dim:
                self.adds.append(AddLinear(extra_dim, (width, size, size)))
            # as in the authors' conv0_ac: batch norm on all but the last block
            self.norms.append(nn.BatchNorm2d(width) if batch_norm and i < len(strides) - 1 else nn.Identity())
            width_in = width
        self.head = nn.Linear(width_in * size * size, out_dim)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        if (extra is None) != (self.extra_dim == 0):
            raise ValueError(f"this encoder was built with extra_dim={self.extra_dim}, "
                             f"and called {'without' if extra is None else 'with'} an extra input")
        lead = x.shape[:-1]
        h = self.convs[0]((2 * x - 1).reshape(-1, *self.image_shape))
        h = h.reshape(*lead, *h.shape[1:])
        if extra is not None:
            lead = torch.broadcast_shapes(lead, extra.shape[:-1])
            h = self.adds[0](h, extra).expand(*lead, *h.shape[-3:])
        h = nn.functional.elu(self.norms[0](h.reshape(-1, *h.shape[-3:])))
        for i in range(1, len(self.convs)):
            h = self.convs[i](h)
            if extra is not None:
                h = self.adds[i](h.reshape(*lead, *h.shape[1:]), extra).reshape(h.shape)
            h = nn.functional.elu(self.norms[i](h))
        return self.head(h.flatten(1)).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """The AVB authors' ``conv1`` decoder (``avb/decoders/conv1.py``; their VAE baseline's).

    z ↦ softplus fully connected layers of 300 and 32·(s/8)² units, then 5×5 transposed
    convolutions with stride 2 to (s/4)² × 32, (s/2)² × 16 (softplus) and s² × C logits.
    z may have any leading dimensions; the output is logits over flattened pixels.
    """

    def __init__(self, latent_dim: int, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        c, s, _ = self.image_shape = _image_shape(data_shape)
        # the spatial sizes at each scale, as in the authors' code: ceil(s / 2^k)
        self.sizes = [math.ceil(s / 2 ** k) for k in (3, 2, 1, 0)]
        self.fc = nn.Sequential(nn.Linear(latent_dim, 300), nn.Softplus(),
                                nn.Linear(300, 32 * self.sizes[0] ** 2), nn.Softplus())
        self.deconvs = nn.ModuleList([
            nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2) for cin, cout in ((32, 32), (32, 16), (16, c))
        ])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, 32, self.sizes[0], self.sizes[0])
        for i, deconv in enumerate(self.deconvs):
            # output_size fixes the output padding so that each scale has the authors' size
            h = deconv(h, output_size=(self.sizes[i + 1], self.sizes[i + 1]))
            if i < len(self.deconvs) - 1:
                h = nn.functional.softplus(h)
        return h.reshape(*lead, -1)


class ConvDecoder0(nn.Module):
    """The AVB authors' ``conv0`` decoder (``avb/decoders/conv0.py``), which every one of their
    AVB MNIST scripts uses, at their ``gf_dim`` = ``channels`` = 64.

    z ↦ a fully connected ELU layer of 8·channels maps at the coarsest scale, then four 5×5
    transposed convolutions with ELU between them, to 4·channels, 2·channels, channels and C
    (logits) maps; as in their encoder, the last ``n_up`` = min(⌊log2 s⌋ − 2, 4) scales double
    the size and the first ones keep it (28×28: 7 → 14 → 28 → 28 → 28). The sizes are theirs:
    ``int(s / 2^k)``.
    """

    def __init__(self, latent_dim: int, data_shape: tuple[int, ...], channels: int = 64) -> None:
        super().__init__()
        c, s, _ = self.image_shape = _image_shape(data_shape)
        n_up = max(min(int(math.log2(s)) - 2, 4), 0)
        # the spatial size at each scale, coarsest first: theirs is s_down reversed
        down = [s] * (4 - n_up) + [int(s / 2 ** k) for k in range(1, n_up + 1)]
        self.sizes = down[::-1] + [s]
        self.channels = channels
        self.fc = nn.Linear(latent_dim, 8 * channels * self.sizes[0] ** 2)
        widths = (8 * channels, 4 * channels, 2 * channels, channels, c)
        self.deconvs = nn.ModuleList(
            nn.ConvTranspose2d(cin, cout, 5, stride=2 if size_out > size_in else 1, padding=2)
            for cin, cout, size_in, size_out in zip(widths[:-1], widths[1:], self.sizes[:-1], self.sizes[1:])
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = nn.functional.elu(self.fc(z.reshape(-1, z.shape[-1])))
        h = h.reshape(-1, 8 * self.channels, self.sizes[0], self.sizes[0])
        for i, deconv in enumerate(self.deconvs):
            h = deconv(h, output_size=(self.sizes[i + 1], self.sizes[i + 1]))
            if i < len(self.deconvs) - 1:
                h = nn.functional.elu(h)
        return h.reshape(*lead, -1)


@BACKBONES.register("conv")
class ConvBackbone:
    """The AVB paper's convolutional MNIST encoder and decoder (fixed sizes; ``arch.hidden``
    and ``arch.activation`` do not apply; ``arch.conv_decoder`` and ``arch.conv_encoder_batch_norm``
    choose between the authors' variants). ``channels``: the base width of the encoder and of
    the ``conv0`` decoder (the authors' ``df_dim`` = ``gf_dim`` = 64)."""

    def __init__(self, channels: int = 64) -> None:
        self.channels = channels

    def encoder(self, arch: Architecture, data_shape: tuple[int, ...], out_dim: int,
                extra_dim: int = 0) -> nn.Module:
        return ConvEncoder(data_shape, out_dim, extra_dim, self.channels, batch_norm=arch.conv_encoder_batch_norm)

    def decoder(self, arch: Architecture, latent_dim: int, data_shape: tuple[int, ...]) -> nn.Module:
        if arch.conv_decoder == "conv0":
            return ConvDecoder0(latent_dim, data_shape, self.channels)
        return ConvDecoder(latent_dim, data_shape)


def get_backbone(name: str) -> Backbone:
    cls = BACKBONES.get(name)
    return cls()
