"""The convolutional LCA layer (reference §5.2): operators against explicit matrices, the
objective along the dynamics, thresholds, metrics and the dictionary update."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from eqsearch.models import lca as lca_module
from eqsearch.models.lca import LCA, unit_norm

# (C, H, W, features, kernel, stride): odd / even kernels and images, strides 1 to 3
GEOMETRIES = [(2, 5, 5, 3, 3, 2), (2, 5, 6, 3, 3, 1), (1, 6, 5, 2, 4, 2), (2, 7, 7, 3, 5, 3)]


def make(c=2, h=9, w=9, features=6, k=3, stride=2, lam=0.2, tau=3.0, iters=40, eta=0.1, seed=0, **kw) -> LCA:
    torch.manual_seed(seed)
    return LCA((c, h, w), features, k, stride, lam, tau, iters, eta, **kw).double()


def explicit_phi(lca: LCA) -> torch.Tensor:
    """Φ̄ as a matrix, built atom by atom: column (f, i, j) is D_f placed at rows S·i.., columns
    S·j.. of the zero-padded frame (C, H + 2P, W + 2P)."""
    c, h, w = lca.input_shape
    f_n, hc, wc = lca.code_shape
    k, s, p = lca.kernel_size, lca.stride, lca.padding
    phi = torch.zeros(c * (h + 2 * p) * (w + 2 * p), f_n * hc * wc, dtype=torch.float64)
    for f, i, j in itertools.product(range(f_n), range(hc), range(wc)):
        col = torch.zeros(c, h + 2 * p, w + 2 * p, dtype=torch.float64)
        col[:, s * i:s * i + k, s * j:s * j + k] = lca.dictionary[f]
        phi[:, (f * hc + i) * wc + j] = col.flatten()
    return phi


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_inhibition_kernel_drive_and_reconstruction_equal_the_explicit_operators(geometry):
    c, h, w, f_n, k, stride = geometry
    lca = make(c, h, w, f_n, k, stride)
    phi = explicit_phi(lca)
    n = phi.shape[1]
    basis = torch.eye(n, dtype=torch.float64).view(n, *lca.code_shape)
    want = phi.t() @ phi - torch.eye(n, dtype=torch.float64)
    torch.testing.assert_close(lca.inhibition(basis).flatten(1).t(), want, rtol=0, atol=1e-12)
    kernel = F.conv2d(basis, lca.lateral_kernel(), padding=lca.lateral_padding)  # lcapt's form
    torch.testing.assert_close(kernel.flatten(1).t(), want, rtol=0, atol=1e-12)
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, c, h, w, generator=g, dtype=torch.float64)
    a = torch.rand((2,) + lca.code_shape, generator=g, dtype=torch.float64)
    p = lca.padding
    frame = F.pad(s, (p, p, p, p)).flatten(1)
    torch.testing.assert_close(lca.drive(s).flatten(1), frame @ phi, rtol=0, atol=1e-12)
    recon = (a.flatten(1) @ phi.t()).view(2, c, h + 2 * p, w + 2 * p)[:, :, p:p + h, p:p + w]
    torch.testing.assert_close(lca.reconstruct(a), recon, rtol=0, atol=1e-12)
    want = 0.5 * (frame - a.flatten(1) @ phi.t()).pow(2).sum(1) + lca.lam * a.abs().flatten(1).sum(1)
    torch.testing.assert_close(lca.objective(s, a), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nonneg", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_objective_decreases_along_the_iterations(nonneg, seed):
    lca = make(nonneg=nonneg, seed=seed)
    x = torch.randn(3, 2, 9, 9, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    s = lca.preprocess(x)
    b = lca.drive(s)
    u = torch.zeros_like(b)
    values = [lca.objective(s, lca.transfer(u))]
    for _ in range(lca.iters):
        u = lca.step(u, b)
        values.append(lca.objective(s, lca.transfer(u)))
    values = torch.stack(values)  # (iters + 1, B)
    assert (values[1:] <= values[:-1] + 1e-12).all()
    assert (values[-1] < 0.95 * values[0]).all()  # it moved: a real decrease, not a flat line
    torch.testing.assert_close(values[0], 0.5 * s.pow(2).flatten(1).sum(1))  # a = 0
    s_again, code = lca(x)
    torch.testing.assert_close(s_again, s)
    torch.testing.assert_close(code, lca.transfer(u))


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_code_equals_lcapts_lateral_kernel_iteration_at_the_shipped_sizes(channels_last):
    """The fold + correlation form of the inhibition against lcapt's kernel G (float32, the
    Fashion-MNIST and CIFAR-10 geometries of the search spaces), whole code runs included."""
    for shape, features, k in (((1, 28, 28), 32, 7), ((3, 32, 32), 64, 9)):
        lca = make(*shape, features=features, k=k, stride=2, lam=0.25, tau=50.0, iters=30).float()
        x = torch.randn((4,) + shape, generator=torch.Generator().manual_seed(0))
        if channels_last:
            lca, x = lca.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        s, a = lca(x)
        g, m = lca.lateral_kernel(), lca.lateral_padding
        torch.testing.assert_close(lca.inhibition(a), F.conv2d(a, g, padding=m), rtol=1e-5, atol=1e-5)
        b, u = lca.drive(s), torch.zeros_like(a)
        for _ in range(lca.iters):
            u = u + (b - u - F.conv2d(lca.transfer(u), g, padding=m)) / lca.tau
        torch.testing.assert_close(a, lca.transfer(u), rtol=1e-4, atol=1e-5)
        assert 0 < lca.sparsity(a).mean() < 1


def test_a_large_batch_is_coded_in_chunks_with_the_codes_of_the_whole(monkeypatch):
    lca = make()
    s, whole = lca(torch.randn(7, 2, 9, 9, generator=torch.Generator().manual_seed(4), dtype=torch.float64))
    monkeypatch.setattr(lca_module, "CPU_CHUNK", 3)
    sizes = []
    relax = LCA._relax
    monkeypatch.setattr(LCA, "_relax", lambda self, part: sizes.append(part.shape[0]) or relax(self, part))
    torch.testing.assert_close(lca.encode(s), whole, rtol=1e-12, atol=1e-12)
    assert sizes == [3, 3, 1]


def test_preprocess_standardises_each_image():
    lca = make()
    x = 3.0 + 2.0 * torch.randn(4, 2, 9, 9, dtype=torch.float64)
    s = lca.preprocess(x)
    torch.testing.assert_close(s.mean((1, 2, 3)), torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(s.std((1, 2, 3)), torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-9)
    assert make(standardize=False).preprocess(x) is x


@pytest.mark.parametrize("threshold, nonneg, want", [
    ("soft", True, [0.0, 0.0, 0.0, 0.0, 0.0, 0.5]),
    ("soft", False, [-1.0, 0.0, 0.0, 0.0, 0.0, 0.5]),
    ("hard", True, [0.0, 0.0, 0.0, 0.0, 0.0, 1.5]),
    ("hard", False, [-2.0, 0.0, 0.0, 0.0, 0.0, 1.5]),
])
def test_thresholds(threshold, nonneg, want):
    lca = make(lam=1.0, threshold=threshold, nonneg=nonneg)
    u = torch.tensor([-2.0, -1.0, -0.5, 0.0, 1.0, 1.5], dtype=torch.float64)
    assert lca.transfer(u).tolist() == want


def test_sparsity_and_relative_reconstruction_error():
    lca = make()
    s = lca.preprocess(torch.randn(2, 2, 9, 9, dtype=torch.float64))
    a = torch.zeros((2,) + lca.code_shape, dtype=torch.float64)
    a[0, 0, 0, 0] = 1.0
    a[0, 1, 2, 3] = -2.0
    n = a[0].numel()
    assert lca.sparsity(a).tolist() == [2 / n, 0.0]
    assert lca.recon_error(s, a)[1].item() == 1.0  # no code: the whole image is the error
    want = (s[0] - lca.reconstruct(a)[0]).norm() / s[0].norm()
    torch.testing.assert_close(lca.recon_error(s, a)[0], want)


def explicit_update(lca: LCA, s: torch.Tensor, a: torch.Tensor, clip: float | None) -> torch.Tensor:
    """unit_norm(D + clip(η·Σ a_f(p)·patch_p(s − ŝ) / (1 + #active_f))), patches read by loops."""
    d = lca.dictionary
    k, st, p = lca.kernel_size, lca.stride, lca.padding
    r = F.pad(s - lca.reconstruct(a), (p, p, p, p))
    delta = torch.zeros_like(d)
    f_n, hc, wc = lca.code_shape
    for f in range(f_n):
        for b, i, j in itertools.product(range(a.shape[0]), range(hc), range(wc)):
            delta[f] += a[b, f, i, j] * r[b, :, st * i:st * i + k, st * j:st * j + k]
        delta[f] *= lca.eta / (1 + int((a[:, f] != 0).sum()))
    if clip is not None:
        delta = delta.clamp(-clip, clip)
    return unit_norm(d + delta)


@pytest.mark.parametrize("clip", [None, 1e-3])
def test_dictionary_update_formula_and_unit_norm_after_every_update(clip):
    lca = make(clip=clip, eta=0.5)
    g = torch.Generator().manual_seed(5)
    for _ in range(4):
        x = torch.randn(3, 2, 9, 9, generator=g, dtype=torch.float64)
        s, a = lca(x)
        assert (a != 0).any()
        want = explicit_update(lca, s, a, clip)
        before = lca.dictionary.clone()
        lca.update_dictionary(s, a)
        torch.testing.assert_close(lca.dictionary, want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(lca.dictionary.flatten(1).norm(dim=1), torch.ones(6, dtype=torch.float64))
        assert not torch.equal(before, lca.dictionary)
        if clip is not None:  # the clip is active: the unclipped step differs
            lca.dictionary.copy_(before)
            assert not torch.allclose(explicit_update(lca, s, a, None), want)
            lca.dictionary.copy_(want)


def test_dictionary_learning_lowers_the_reconstruction_error():
    """Images made of a few atoms of a hidden dictionary: learning the dictionary from random
    lowers the relative reconstruction error at a fixed λ."""
    torch.manual_seed(0)
    hidden = unit_norm(torch.randn(4, 1, 5, 5, dtype=torch.float64))
    g = torch.Generator().manual_seed(1)
    codes = (torch.rand(64, 4, 6, 6, generator=g, dtype=torch.float64) < 0.08).double() * 3.0
    images = F.conv_transpose2d(codes, hidden, stride=2, padding=2, output_padding=1)  # (64, 1, 12, 12)
    lca = LCA((1, 12, 12), 8, 5, 2, lam=0.1, tau=5.0, iters=50, eta=0.2).double()

    def error() -> float:
        s, a = lca(images)
        return float(lca.recon_error(s, a).mean())

    start = error()
    for _ in range(3):
        for batch in images.split(16):
            lca.update_dictionary(*lca(batch))
    assert error() < 0.8 * start


def test_set_dictionary_normalises_and_checks_the_shape():
    lca = make()
    lca.set_dictionary(2.0 * torch.ones(6, 2, 3, 3))
    torch.testing.assert_close(lca.dictionary, torch.full((6, 2, 3, 3), 1 / 18 ** 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"needs \(6, 2, 3, 3\)"):
        lca.set_dictionary(torch.ones(5, 2, 3, 3))
