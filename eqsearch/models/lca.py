"""Convolutional LCA (locally competitive algorithm): the sparse-coding layer of code base D
(reference §5.2, lcapt's ``LCAConv2D``), written for this project.

Shapes. Input x (B, C, H, W); dictionary D (F, C, k, k) (F features, odd or even kernel k), every
atom D_f of unit L2 norm over (C, k, k); code a and membrane potentials u (B, F, H_c, W_c) with
stride S, padding P = ⌊k/2⌋ and H_c = ⌊(H + 2P − k)/S⌋ + 1 (32×32, k = 9, S = 2 → 16×16).

Operators. Φ maps a code to an image: Φa = Σ_f D_f ∗ a_f placed at stride S (a transposed
convolution); Φᵀ is the strided correlation with D.

- standardisation (``standardize``): s = (x − mean) / (std + 1e-12) per sample over (C, H, W)
  (std: torch's unbiased estimate); otherwise s = x.
- drive: b = Φᵀs = conv2d(s, D, stride S, padding P), (B, F, H_c, W_c).
- lateral inhibition: G = ΦᵀΦ − I in convolutional form, the kernel (F, F, 2m+1, 2m+1) with
  m = ⌊(k − 1)/S⌋ and G[f, g, m + d] = Σ_{c,y} D_f(c, y + S·d)·D_g(c, y) − [f = g, d = 0],
  applied in code space as conv2d(a, G, padding m) (stride 1). It is ΦᵀΦ − I of the
  reconstruction onto the zero-padded frame of size H + 2P: an atom near the border also
  competes with the part of its neighbours that falls outside the image (as in lcapt).
- reconstruction ŝ = Φa on the image: conv_transpose2d(a, D, stride S, padding P) with the
  output padding that gives back H × W.

Dynamics. From u = 0, ``iters`` Euler steps of length 1/τ:
u ← u + (b − u − G ⊛ T_λ(u)) / τ; the code is a = T_λ(u) after the last step (lcapt returns
the code of the step before; one more step of a converging system). The transfer T_λ:
soft max(u − λ, 0) (non-negative) or sign(u)·max(|u| − λ, 0); hard u·1[u > λ] or u·1[|u| > λ].

Sign convention: with the soft threshold the dynamics descend the objective
E(a) = ½‖s̄ − Φ̄a‖² + λ‖a‖₁, s̄ and Φ̄a on the zero-padded frame (:meth:`LCA.objective`); it is
the image objective ½‖s − ŝ‖² + λ‖a‖₁ plus ½‖the part of Φ̄a outside the image‖².

Dictionary update (no autograd, :meth:`LCA.update_dictionary`): with the residual r = s − ŝ,
ΔD_f = η·Σ_{batch, positions p} a_f(p)·patch_p(r) / (1 + #{non-zero entries of a_f in the batch}),
clipped to ±``clip``, D ← D + ΔD, then every atom is renormalised. patch_p reads r with the
drive's padding and stride, so each atom steps along −∂(½‖s − ŝ‖²)/∂D_f, scaled by
η/(1 + #active).

Dictionary files (:func:`save_dictionary`, written by ``eqsearch lca-pretrain``, read by the
LCA-CNN's ``pretrained`` / ``finetune`` modes): a torch file of ``{"dictionary": D (F, C, k, k)
float32, "settings": what learned it (LCA settings, λ schedule, data set, hold-out, epochs)}``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from eqsearch.errors import ConfigError

THRESHOLDS = ("soft", "hard")


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    """channels-last when ``t`` (4-D) is stored so (``model.to(memory_format=...)``)."""
    cl = t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def unit_norm(d: torch.Tensor) -> torch.Tensor:
    """Every atom d[f] scaled to unit L2 norm over (C, k, k)."""
    return d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


class LCA(nn.Module):
    """Convolutional LCA sparse coder with a unit-norm dictionary (the buffer ``dictionary``).

    ``input_shape`` (C, H, W) fixes the image size; ``features`` F, ``kernel_size`` k,
    ``stride`` S; ``lam`` λ, ``tau`` τ, ``iters`` Euler steps, ``eta`` the dictionary step,
    ``threshold`` soft / hard, ``nonneg`` one-sided transfer, ``standardize`` per-image
    standardisation, ``clip`` the bound on |ΔD| (None: no clip). The initial dictionary is
    trunc-normal (mean 0, std 1, in [−2, 2]) from torch's global generator, normalised.
    """

    def __init__(self, input_shape: tuple[int, int, int], features: int, kernel_size: int, stride: int,
                 lam: float, tau: float, iters: int, eta: float, threshold: str = "soft", nonneg: bool = True,
                 standardize: bool = True, clip: float | None = None):
        super().__init__()
        if threshold not in THRESHOLDS:
            raise ValueError(f"threshold: got {threshold!r}; allowed: {', '.join(THRESHOLDS)}")
        c, h, w = input_shape
        self.input_shape = (c, h, w)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, kernel_size // 2
        self.lam, self.tau, self.iters, self.eta = lam, tau, iters, eta
        self.threshold, self.nonneg, self.standardize, self.clip = threshold, nonneg, standardize, clip
        p = self.padding
        hc, wc = (h + 2 * p - kernel_size) // stride + 1, (w + 2 * p - kernel_size) // stride + 1  # >= 1
        self.code_shape = (features, hc, wc)
        # the reconstruction onto the canvas has size (H_c − 1)·S + k <= H + 2P; the rest is output padding
        self._output_padding = (h + 2 * p - (hc - 1) * stride - kernel_size,
                                w + 2 * p - (wc - 1) * stride - kernel_size)
        self.lateral_padding = (kernel_size - 1) // stride
        d = torch.empty(features, c, kernel_size, kernel_size)
        nn.init.trunc_normal_(d, mean=0.0, std=1.0, a=-2.0, b=2.0)
        self.register_buffer("dictionary", unit_norm(d))

    # ------------------------------------------------------------------ dictionary
    def set_dictionary(self, d: torch.Tensor) -> None:
        """Copy ``d`` (F, C, k, k) into the dictionary (in place), normalised."""
        if d.shape != self.dictionary.shape:
            raise ValueError(f"dictionary of shape {tuple(d.shape)}; this layer needs {tuple(self.dictionary.shape)}")
        with torch.no_grad():
            self.dictionary.copy_(unit_norm(d.to(self.dictionary)))

    def lateral_kernel(self) -> torch.Tensor:
        """G = ΦᵀΦ − I in convolutional form, (F, F, 2m + 1, 2m + 1) (module docstring)."""
        d = self.dictionary
        m = self.lateral_padding
        # D correlated with itself: conv2d(D, D, stride S, padding m·S)[f, g, m + d] = Σ D_f(y + S·d)·D_g(y)
        k = F.conv2d(d, d, stride=self.stride, padding=m * self.stride)
        k = k.contiguous(memory_format=_memory_format(d))
        k[:, :, m, m] -= torch.eye(d.shape[0], dtype=d.dtype, device=d.device)
        return k

    # ------------------------------------------------------------------ coding
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """s: per-sample zero mean and unit variance over (C, H, W) when ``standardize``."""
        if not self.standardize:
            return x
        dims = tuple(range(1, x.dim()))
        x = x - x.mean(dims, keepdim=True)
        return x / (x.std(dims, keepdim=True) + 1e-12)

    def drive(self, s: torch.Tensor) -> torch.Tensor:
        """b = Φᵀs, (B, F, H_c, W_c)."""
        return F.conv2d(s, self.dictionary, stride=self.stride, padding=self.padding)

    def transfer(self, u: torch.Tensor) -> torch.Tensor:
        """a = T_λ(u) (soft / hard, one-sided when ``nonneg``)."""
        lam = self.lam
        if self.threshold == "soft":
            if self.nonneg:
                return (u - lam).clamp_min(0.0)
            return u.sign() * (u.abs() - lam).clamp_min(0.0)
        keep = u > lam if self.nonneg else u.abs() > lam
        return u * keep

    def step(self, u: torch.Tensor, b: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
        """One Euler step u + (b − u − G ⊛ T_λ(u))/τ, with G = ``lateral``."""
        inhibition = F.conv2d(self.transfer(u), lateral, padding=self.lateral_padding)
        return u + (b - u - inhibition) / self.tau

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, a): the preprocessed input (B, C, H, W) and its code (B, F, H_c, W_c) after
        ``iters`` steps from u = 0."""
        s = self.preprocess(x)
        b = self.drive(s)
        lateral = self.lateral_kernel()
        u = torch.zeros_like(b)
        for _ in range(self.iters):
            u = self.step(u, b, lateral)
        return s, self.transfer(u)

    # ------------------------------------------------------------------ reconstruction and metrics
    def reconstruct(self, a: torch.Tensor) -> torch.Tensor:
        """ŝ = Φa on the image, (B, C, H, W)."""
        return F.conv_transpose2d(a, self.dictionary, stride=self.stride, padding=self.padding,
                                  output_padding=self._output_padding)

    def objective(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """E(a) = ½‖s̄ − Φ̄a‖² + λ‖a‖₁ per sample (B,), on the zero-padded frame: the function
        the soft-threshold dynamics descend (module docstring)."""
        p = self.padding
        canvas = F.conv_transpose2d(a, self.dictionary, stride=self.stride)
        frame = F.pad(canvas, (0, self._output_padding[1], 0, self._output_padding[0]))
        res = F.pad(s, (p, p, p, p)) - frame
        return 0.5 * res.pow(2).flatten(1).sum(1) + self.lam * a.abs().flatten(1).sum(1)

    @staticmethod
    def sparsity(a: torch.Tensor) -> torch.Tensor:
        """Fraction of non-zero code entries per sample (B,)."""
        return (a != 0).flatten(1).to(a.dtype).mean(1)

    def recon_error(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """‖s − ŝ‖ / ‖s‖ per sample (B,), on the image."""
        res = (s - self.reconstruct(a)).flatten(1).norm(dim=1)
        return res / s.flatten(1).norm(dim=1).clamp_min(1e-12)

    # ------------------------------------------------------------------ learning
    @torch.no_grad()
    def update_dictionary(self, s: torch.Tensor, a: torch.Tensor) -> None:
        """One dictionary step from the code ``a`` of the inputs ``s`` (module docstring)."""
        d = self.dictionary
        residual = s - self.reconstruct(a)
        corr = torch.nn.grad.conv2d_weight(residual, d.shape, a, stride=self.stride, padding=self.padding)
        active = (a != 0).sum((0, 2, 3)).to(d.dtype)
        delta = self.eta * corr / (1.0 + active).view(-1, 1, 1, 1)
        if self.clip is not None and math.isfinite(self.clip):
            delta = delta.clamp(-self.clip, self.clip)
        d.copy_(unit_norm(d + delta))


def build_lca(cfg, input_shape: tuple[int, int, int]) -> LCA:
    """The :class:`LCA` of an ``lca`` config section (:class:`eqsearch.families.lca.LCAConfig`)."""
    return LCA(input_shape, cfg.features, cfg.ksize, cfg.stride, cfg.lam, cfg.tau, cfg.iters, cfg.eta,
               threshold=cfg.threshold, nonneg=cfg.nonneg, standardize=cfg.standardize, clip=cfg.clip)


DICTIONARY_FILE = "dictionary.pt"


def save_dictionary(path: str | Path, lca: LCA, settings: dict) -> None:
    """Write the dictionary (F, C, k, k), float32 on the CPU, with ``settings`` (what learned it)."""
    torch.save({"dictionary": lca.dictionary.detach().float().cpu().contiguous(), "settings": dict(settings)},
               path)


def load_dictionary(path: str | Path, where: str = "model.dictionary") -> tuple[torch.Tensor, dict]:
    """(dictionary, settings) from a file of :func:`save_dictionary`, or a folder holding
    ``dictionary.pt``; :class:`ConfigError` naming ``where`` when there is none."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / DICTIONARY_FILE
    if not p.is_file():
        raise ConfigError(f"{where}: got {str(path)!r}, which is not a file; allowed: a {DICTIONARY_FILE} (or its "
                          "folder) written by eqsearch lca-pretrain")
    data = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or not torch.is_tensor(data.get("dictionary")) or data["dictionary"].dim() != 4:
        raise ConfigError(f"{where}: {str(p)!r} holds no dictionary; allowed: a file written by eqsearch lca-pretrain")
    return data["dictionary"], dict(data.get("settings") or {})
