"""The optimizers against hand-computed updates, on the ``device`` fixture (``pytest --device``):
the expected values are computed on the CPU in float64, the optimizer steps on the device."""

import copy
import math

import pytest
import torch

from vaebench.methods import create_method
from vaebench.optim import BurdaAdam, make_optimizer


def _burda_by_hand(p0, grads, lr, b1, b2, eps):
    """The IWAE authors' Theano update, one parameter, written out in float64: the parameter
    moves with the moments from before each step; the step size uses t from 1."""
    p, m, v = p0.double().clone(), torch.zeros_like(p0, dtype=torch.float64), torch.ones_like(p0, dtype=torch.float64)
    out = []
    for t, g in enumerate(grads, start=1):
        g = g.double()
        alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        p = p - alpha * m / (v.sqrt() + eps)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        out.append(p.clone())
    return out


def test_burda_adam_matches_the_hand_computed_update_over_three_steps(device):
    torch.manual_seed(0)
    p0 = torch.randn(3, 4, dtype=torch.float64)
    grads = [torch.randn(3, 4, dtype=torch.float64) * s for s in (1.0, 30.0, 0.1)]
    lr, b1, b2, eps = 1e-2, 0.99, 0.999, 1e-4
    p = torch.nn.Parameter(p0.to(device, copy=True))  # p0 stays the starting point
    opt = BurdaAdam([p], lr=lr, betas=(b1, b2), eps=eps)
    expected = _burda_by_hand(p0, grads, lr, b1, b2, eps)
    for g, want in zip(grads, expected):
        p.grad = g.to(device)
        opt.step()
        torch.testing.assert_close(p.detach().cpu(), want, rtol=0, atol=1e-15)
    # the first step used m = 0: it did not move the parameter
    assert torch.equal(expected[0], p0)
    # step 2 by hand, with the numbers written out: alpha = lr·sqrt(1 − β2²)/(1 − β1²), m = (1 − β1) g1, v = β2 + (1 − β2) g1²
    g1 = grads[0]
    alpha = lr * math.sqrt(1 - b2 ** 2) / (1 - b1 ** 2)
    step2 = p0 - alpha * (0.01 * g1) / ((0.999 + 0.001 * g1 ** 2).sqrt() + eps)
    torch.testing.assert_close(expected[1], step2, rtol=0, atol=1e-15)


def test_burda_adam_state_round_trips_with_step_count_and_moments(device):
    torch.manual_seed(1)
    a = torch.nn.Parameter(torch.randn(5).to(device))
    opt = BurdaAdam([a], lr=1e-3)
    for _ in range(3):
        a.grad = torch.randn(5).to(device)
        opt.step()
    b = torch.nn.Parameter(a.detach().clone())
    clone = BurdaAdam([b], lr=1e-3)
    clone.load_state_dict(copy.deepcopy(opt.state_dict()))  # as a checkpoint would: its own tensors
    assert clone.param_groups[0]["step"] == 3
    g = torch.randn(5).to(device)
    a.grad, b.grad = g.clone(), g.clone()
    opt.step()
    clone.step()
    assert torch.equal(a, b)


def test_method_config_selects_the_optimizer():
    vae = create_method("vae", {"optimizer": "burda-adam", "betas": [0.99, 0.999]}, data_shape=(4,), latent_dim=2)
    opt = vae.configure_optimizers()["model"]
    assert isinstance(opt, BurdaAdam) and opt.defaults["eps"] == 1e-4 and opt.defaults["betas"] == (0.99, 0.999)
    plain = create_method("vae", {}, data_shape=(4,), latent_dim=2).configure_optimizers()["model"]
    assert type(plain) is torch.optim.Adam
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("sgd", [torch.nn.Parameter(torch.zeros(1))], lr=1.0, betas=(0.9, 0.9))


def _normgrad_by_hand(p0, grads, lr, b1, b2, eps):
    """The VampPrior authors' AdamNormGrad (utils/optimizer.py), one parameter, in float64: the
    gradient over its L2 norm plus 1e-7, then moments from zeros, ε after the uncorrected root."""
    p, m, v = p0.double().clone(), torch.zeros_like(p0, dtype=torch.float64), torch.zeros_like(p0, dtype=torch.float64)
    out = []
    for t, g in enumerate(grads, start=1):
        g = g.double() / (g.double().norm() + 1e-7)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (v.sqrt() + eps)
        out.append(p.clone())
    return out


def test_adam_normgrad_matches_the_hand_computed_update_for_each_tensor_on_its_own(device):
    from vaebench.optim import AdamNormGrad

    torch.manual_seed(0)
    starts = [torch.randn(3, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
    # gradients of very different scales: each tensor is normalised by its own norm
    grads = [[torch.randn(3, 4, dtype=torch.float64) * s for s in (1.0, 30.0, 0.1)],
             [torch.randn(5, dtype=torch.float64) * s for s in (1e-3, 1e2, 1.0)]]
    lr, b1, b2, eps = 5e-2, 0.9, 0.999, 1e-3  # an ε large enough that its place matters
    params = [torch.nn.Parameter(p0.to(device, copy=True)) for p0 in starts]
    opt = make_optimizer("adam-normgrad", params, lr=lr, betas=(b1, b2), eps=eps)
    assert isinstance(opt, AdamNormGrad)
    expected = [_normgrad_by_hand(p0, g, lr, b1, b2, eps) for p0, g in zip(starts, grads)]
    for step in range(3):
        for p, g in zip(params, grads):
            p.grad = g[step].to(device)
        opt.step()
        for p, want in zip(params, expected):
            torch.testing.assert_close(p.detach().cpu(), want[step], rtol=0, atol=1e-14)
    # its defaults are the authors' (lr aside, which experiment.py sets): betas (0.9, 0.999), ε 1e-8
    defaults = AdamNormGrad([torch.nn.Parameter(torch.zeros(1))]).defaults
    assert {k: defaults[k] for k in ("betas", "eps")} == {"betas": (0.9, 0.999), "eps": 1e-8}
    # the state round-trips: a copy continues identically
    twin_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    twin = AdamNormGrad(twin_params, lr=lr, betas=(b1, b2), eps=eps)
    twin.load_state_dict(copy.deepcopy(opt.state_dict()))
    for opt_, ps in ((opt, params), (twin, twin_params)):
        for p, g in zip(ps, grads):
            p.grad = g[0].to(device)
        opt_.step()
    for a, b in zip(params, twin_params):
        assert torch.equal(a, b)
