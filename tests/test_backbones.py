"""Backbones: the conv backbone's shapes, its extra input, and methods built on it."""

from __future__ import annotations

import pytest
import torch

from helpers import assert_loss_falls, losses_over_steps
from vaebench.backbones import Architecture, ConvBackbone, ConvDecoder, ConvDecoder0, get_backbone
from vaebench.errors import ConfigError
from vaebench.methods import create_method, list_methods

MNIST_SHAPE = (1, 28, 28)


@pytest.fixture
def images() -> torch.Tensor:
    return (torch.rand(6, 784, generator=torch.Generator().manual_seed(0)) < 0.3).float()


def test_conv_encoder_shapes_with_and_without_extra_input(images):
    torch.manual_seed(0)
    backbone, arch = ConvBackbone(channels=4), Architecture(backbone="conv")
    assert backbone.encoder(arch, MNIST_SHAPE, 10)(images).shape == (6, 10)
    noisy = backbone.encoder(arch, MNIST_SHAPE, 10, extra_dim=3)
    assert noisy(images, torch.randn(6, 3)).shape == (6, 10)
    # noise with a leading sample dimension broadcasts against x
    assert noisy(images, torch.randn(5, 6, 3)).shape == (5, 6, 10)
    with pytest.raises(ValueError):
        noisy(images)


def test_conv_encoder_uses_its_extra_input(images):
    torch.manual_seed(0)
    encoder = ConvBackbone(channels=4).encoder(Architecture(backbone="conv"), MNIST_SHAPE, 2, extra_dim=3).eval()
    eps = torch.randn(2, 6, 3)
    out = encoder(images, eps)
    assert not torch.allclose(out[0], out[1])
    # the broadcast result equals running each noise draw separately
    torch.testing.assert_close(out[1], encoder(images, eps[1]))


def test_conv_decoder_gives_flat_logits_over_any_leading_dims():
    torch.manual_seed(0)
    decoder = ConvBackbone().decoder(Architecture(backbone="conv"), 8, MNIST_SHAPE)
    assert decoder(torch.randn(4, 8)).shape == (4, 784)
    assert decoder(torch.randn(3, 4, 8)).shape == (3, 4, 784)
    z = torch.randn(3, 4, 8)
    torch.testing.assert_close(decoder(z)[2], decoder(z[2]))


def test_conv_backbone_refuses_non_square_images():
    with pytest.raises(ConfigError):
        ConvBackbone().decoder(Architecture(backbone="conv"), 8, (784,))


def test_vae_with_conv_backbone_trains(images):
    torch.manual_seed(0)
    vae = create_method("vae", {}, data_shape=MNIST_SHAPE, latent_dim=8,
                        architecture=Architecture(backbone="conv"))
    assert isinstance(get_backbone("conv"), ConvBackbone)
    assert_loss_falls(losses_over_steps(vae, images, 10, "model"))


@pytest.mark.parametrize("name", sorted(set(list_methods()) - {"vae"}))
def test_every_method_builds_and_steps_on_the_conv_backbone(images, name):
    torch.manual_seed(0)
    method = create_method(name, {}, data_shape=MNIST_SHAPE, latent_dim=4, architecture=Architecture(backbone="conv"))
    losses = method.update(images[:2])
    assert all(torch.isfinite(v) for v in losses.values())
    # (draws, batch, the model's latent size): a hierarchy of latent layers is one longer vector
    assert method.posterior(images[:2], 3).z.shape == (3, 2, method.latent_dim)
    assert method.prior.latent_dim == method.latent_dim


def test_glorot_init_is_uniform_within_the_glorot_bound_with_zero_biases():
    torch.manual_seed(0)
    arch = Architecture(hidden=(200, 200), activation="tanh", init="glorot")
    decoder = get_backbone("mlp").decoder(arch, 50, MNIST_SHAPE)
    linears = [m for m in decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(50, 200), (200, 200), (200, 784)]
    assert isinstance(decoder[1], torch.nn.Tanh)
    for m in linears:
        bound = (6 / (m.in_features + m.out_features)) ** 0.5
        w = m.weight.detach()
        assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
        # the variance of U(−b, b) is b²/3
        assert w.var().item() == pytest.approx(bound ** 2 / 3, rel=0.05)
        assert (m.bias == 0).all()


def test_mean_logit_output_bias_needs_a_linear_output_layer():
    torch.manual_seed(0)
    vae = create_method("vae", {}, data_shape=MNIST_SHAPE, latent_dim=2,
                        architecture=Architecture(backbone="conv", output_bias="mean-logit"))
    with pytest.raises(ConfigError, match="output_bias"):
        vae.init_from_data(torch.rand(10, 784))


def _output_sizes(net: torch.nn.Module, kind: type[torch.nn.Module], *inputs: torch.Tensor) -> list[tuple[int, ...]]:
    """The output shapes (less the batch) of every ``kind`` layer of ``net`` in one forward pass."""
    sizes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
             for m in net.modules() if isinstance(m, kind)]
    with torch.no_grad():
        net(*inputs)
    for hook in hooks:
        hook.remove()
    return sizes


def test_conv0_decoder_has_the_authors_layers():
    """avb/decoders/conv0.py at gf_dim 64 for 28×28: fc to 7·7·512 (ELU), transposed 5×5 convolutions
    to 14² × 256 and 28² × 128 (stride 2), 28² × 64 and 28² × 1 logits (stride 1), ELU between, no norm."""
    torch.manual_seed(0)
    arch = Architecture(backbone="conv", conv_decoder="conv0")
    decoder = ConvBackbone().decoder(arch, 8, MNIST_SHAPE)
    assert isinstance(decoder, ConvDecoder0)
    linears = [m for m in decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 512 * 7 * 7)]
    deconvs = [m for m in decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in deconvs] == [
        (512, 256, (5, 5), (2, 2)), (256, 128, (5, 5), (2, 2)), (128, 64, (5, 5), (1, 1)), (64, 1, (5, 5), (1, 1))]
    assert _output_sizes(decoder, torch.nn.ConvTranspose2d, torch.randn(2, 8)) == [
        (256, 14, 14), (128, 28, 28), (64, 28, 28), (1, 28, 28)]
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Softplus)) for m in decoder.modules())
    z = torch.randn(3, 2, 8)
    assert decoder(z).shape == (3, 2, 784)
    torch.testing.assert_close(decoder(z)[1], decoder(z[1]))
    # ELU after the fully connected layer and between the convolutions: nothing below −1 enters them
    inputs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda m, i, o: inputs.append(i[0])) for m in deconvs]
    decoder(torch.randn(4, 8) * 10)
    for hook in hooks:
        hook.remove()
    assert all(h.min() >= -1 and h.min() < 0 for h in inputs)


def test_the_default_conv_decoder_is_still_conv1():
    decoder = ConvBackbone().decoder(Architecture(backbone="conv"), 8, MNIST_SHAPE)
    assert type(decoder) is ConvDecoder
    linears = [m for m in decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 300), (300, 32 * 4 * 4)]


@pytest.mark.parametrize("batch_norm", [True, False])
def test_conv_encoder_layers_with_and_without_batch_norm(images, batch_norm):
    """avb/avb/models/conv0.py (noise added after every convolution, no batch norm) and the body of
    conv0_ac.py (no noise, batch norm after the first three convolutions), at df_dim 64 for 28×28."""
    torch.manual_seed(0)
    arch = Architecture(backbone="conv", conv_encoder_batch_norm=batch_norm)
    encoder = ConvBackbone().encoder(arch, MNIST_SHAPE, 8, extra_dim=32)
    convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in convs] == [
        (1, 64, (5, 5), (1, 1)), (64, 128, (5, 5), (1, 1)), (128, 256, (5, 5), (2, 2)), (256, 512, (5, 5), (2, 2))]
    assert _output_sizes(encoder, torch.nn.Conv2d, images[:2], torch.randn(2, 32)) == [
        (64, 28, 28), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    assert [a.feature_shape for a in encoder.adds] == [(64, 28, 28), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    assert (encoder.head.in_features, encoder.head.out_features) == (512 * 7 * 7, 8)
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [m.num_features for m in norms] == ([64, 128, 256] if batch_norm else [])


def test_conv_options_are_refused_on_another_backbone():
    with pytest.raises(ConfigError, match="conv_decoder applies to the conv backbone only"):
        Architecture(conv_decoder="conv0")
    with pytest.raises(ConfigError, match="conv_encoder_batch_norm applies to the conv backbone only"):
        Architecture(conv_encoder_batch_norm=False)


def test_avb_builds_the_authors_networks_from_the_conv_options(images):
    torch.manual_seed(0)
    arch = Architecture(backbone="conv", conv_decoder="conv0", conv_encoder_batch_norm=False)
    avb = create_method("avb", {"adversary_hidden": [8], "adversary_features": 8}, data_shape=MNIST_SHAPE,
                        latent_dim=4, architecture=arch)
    assert isinstance(avb.decoder.net, ConvDecoder0)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in avb.encoder.modules())
    losses = avb.update(images[:2])
    assert all(torch.isfinite(v) for v in losses.values())


# The VampPrior authors' one-layer VAE (jmtomczak/vae_vampprior, models/VAE.py) for 784 pixels and
# 40 latent dimensions, as the (in, out) sizes of their nn.Linear layers, each with a bias:
# encoder GatedDense(784, 300), GatedDense(300, 300) (two linear maps each, h and g), then
# q_z_mean and q_z_logvar (300 → 40 each); decoder GatedDense(40, 300), GatedDense(300, 300), p_x_mean.
THEIR_ENCODER = [(784, 300), (784, 300), (300, 300), (300, 300), (300, 40), (300, 40)]
THEIR_DECODER = [(40, 300), (40, 300), (300, 300), (300, 300), (300, 784)]


def _parameters(layers):
    return sum(a * b + b for a, b in layers)


def test_the_gated_backbone_has_the_vampprior_authors_layers_and_parameter_count():
    from vaebench.backbones import GatedDense, SplitLinear

    torch.manual_seed(0)
    arch = Architecture(backbone="gated", hidden=(300, 300), init="he")
    encoder = get_backbone("gated").encoder(arch, MNIST_SHAPE, 2 * 40)
    decoder = get_backbone("gated").decoder(arch, 40, MNIST_SHAPE)
    assert [type(m) for m in encoder.net] == [GatedDense, GatedDense, SplitLinear]
    assert [type(m) for m in decoder] == [GatedDense, GatedDense, torch.nn.Linear]
    for net, theirs in ((encoder, THEIR_ENCODER), (decoder, THEIR_DECODER)):
        # their tensors one for one, in their order (an optimizer normalising per tensor sees the same)
        linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
        assert [(m.in_features, m.out_features) for m in linears] == theirs
        assert [tuple(p.shape) for p in net.parameters()] == [s for a, b in theirs for s in ((b, a), (b,))]
        assert sum(p.numel() for p in net.parameters()) == _parameters(theirs)
    assert _parameters(THEIR_ENCODER) == 675_680 and _parameters(THEIR_DECODER) == 441_184

    # the VAE and VampPrior built on it: their totals, the 500 pseudo-inputs (500 × 784) included
    vae = create_method("vae", {}, data_shape=MNIST_SHAPE, latent_dim=40, architecture=arch)
    vamp = create_method("vampprior", {"analytic_kl": False, "components": 500}, data_shape=MNIST_SHAPE,
                         latent_dim=40, architecture=arch)
    assert sum(p.numel() for p in vae.parameters()) == 675_680 + 441_184
    assert sum(p.numel() for p in vamp.parameters()) == 675_680 + 441_184 + 500 * 784


def test_a_gated_dense_layer_is_the_linear_map_times_the_sigmoid_of_the_gate():
    from vaebench.backbones import GatedDense

    torch.manual_seed(0)
    layer = GatedDense(5, 3)
    x = torch.randn(4, 5)
    h, g = layer.h, layer.g
    expected = (x @ h.weight.T + h.bias) * torch.sigmoid(x @ g.weight.T + g.bias)
    torch.testing.assert_close(layer(x), expected)
    # any leading dimensions, and the encoder's extra input broadcast against x
    encoder = get_backbone("gated").encoder(Architecture(backbone="gated", hidden=(6,)), (5,), 2, extra_dim=3)
    eps = torch.randn(7, 4, 3)
    out = encoder(x, eps)
    assert out.shape == (7, 4, 2)
    torch.testing.assert_close(out[3], encoder(x, eps[3]))


def test_he_init_draws_normal_weights_with_variance_two_over_fan_in_and_keeps_torch_biases():
    torch.manual_seed(0)
    decoder = get_backbone("gated").decoder(Architecture(backbone="gated", hidden=(300, 300), init="he"), 40,
                                            MNIST_SHAPE)
    linears = [m for m in decoder.modules() if isinstance(m, torch.nn.Linear)]
    for m in linears:
        w = m.weight.detach()
        assert w.mean().item() == pytest.approx(0, abs=4 * (2 / m.in_features / w.numel()) ** 0.5)
        assert w.var().item() == pytest.approx(2 / m.in_features, rel=0.05)
        # PyTorch's default bias, U(−1/sqrt(fan_in), 1/sqrt(fan_in)): not zero, within the bound
        assert 0 < m.bias.abs().max().item() <= m.in_features ** -0.5
    # the torch default is not He: its weights are uniform with variance 1/(3 fan_in)
    plain = get_backbone("gated").decoder(Architecture(backbone="gated", hidden=(300, 300)), 40, MNIST_SHAPE)
    assert plain[-1].weight.var().item() == pytest.approx(1 / (3 * 300), rel=0.05)
