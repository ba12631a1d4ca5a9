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
- canvas (:meth:`LCA.canvas`): Φa on the canvas (B, C, (H_c − 1)·S + k, (W_c − 1)·S + k), the
  part of the zero-padded frame (C, H + 2P, W + 2P) that the atoms reach; computed as the
  columns Dᵀa (B, C·k·k, H_c·W_c) folded (``F.fold``) at stride S.
- lateral inhibition (:meth:`LCA.inhibition`): (ΦᵀΦ − I)a = conv2d(canvas(a), D, stride S) − a,
  ΦᵀΦ − I of the reconstruction onto the zero-padded frame: an atom near the border also
  competes with the part of its neighbours that falls outside the image (as in lcapt, whose
  kernel G = D ⋆ D − I, (F, F, 2m + 1, 2m + 1) with m = ⌊(k − 1)/S⌋, is the same operator as a
  convolution in code space, :meth:`LCA.lateral_kernel`). On one CPU thread at the shipped
  sizes (1×28×28, F 32, k 7, S 2; 3×32×32, F 64, k 9, S 2) the fold + correlation takes
  0.3–0.4× the time of the kernel G per iteration (``benchmarks/lca_cnn.py --lateral``), whose
  F²·(2m + 1)² multiply-adds per code position are 10–16× more work; the two agree to float
  rounding (tests).
- reconstruction ŝ = Φa on the image: the canvas, zero-padded to the frame, cropped to H × W.

On a CPU the LCA codes a large batch ``CPU_CHUNK`` (128) images at a time: the iteration's
tensors of a large batch outgrow the caches (one thread: 2.2× the time per image for a batch of
1000 at 1×28×28, F 32; 1.6× for 256 at 3×32×32, F 64); the code of an image does not depend
on the others of its batch.

Dynamics. From u = 0, ``iters`` Euler steps of length 1/τ:
u ← u + (b − u − (ΦᵀΦ − I)T_λ(u)) / τ; the code is a = T_λ(u) after the last step (lcapt returns
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
CPU_CHUNK = 128  # images coded at a time on a CPU (module docstring)


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
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
        self.canvas_shape = ((hc - 1) * stride + kernel_size, (wc - 1) * stride + kernel_size)  # <= H + 2P
        # the zeros that pad the canvas to the frame, at the bottom and on the right
        self._frame_padding = (0, w + 2 * p - self.canvas_shape[1], 0, h + 2 * p - self.canvas_shape[0])
        self.lateral_padding = (kernel_size - 1) // stride  # m of the kernel form of ΦᵀΦ − I
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
        """lcapt's G = D ⋆ D − I, (F, F, 2m + 1, 2m + 1): ΦᵀΦ − I as a convolution in code space
        (padding m = ``lateral_padding``). The reference form of :meth:`inhibition`, which is
        faster (module docstring); the tests and ``benchmarks/lca_cnn.py`` compare the two."""
        d = self.dictionary
        m = self.lateral_padding
        # D correlated with itself: conv2d(D, D, stride S, padding m·S)[f, g, m + d] = Σ D_f(y + S·d)·D_g(y)
        k = F.conv2d(d, d, stride=self.stride, padding=m * self.stride)
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

    def canvas(self, a: torch.Tensor) -> torch.Tensor:
        """Φa on the canvas, (B, C, (H_c − 1)·S + k, (W_c − 1)·S + k): the columns Dᵀa
        (B, C·k·k, H_c·W_c) folded at stride S."""
        columns = self.dictionary.flatten(1).t() @ a.flatten(2)
        return F.fold(columns, self.canvas_shape, self.kernel_size, stride=self.stride)

    def inhibition(self, a: torch.Tensor) -> torch.Tensor:
        """(ΦᵀΦ − I)a, (B, F, H_c, W_c): the canvas correlated with D at stride S, minus a."""
        return F.conv2d(self.canvas(a), self.dictionary, stride=self.stride) - a

    def step(self, u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """One Euler step u + (b − u − (ΦᵀΦ − I)T_λ(u))/τ, (B, F, H_c, W_c)."""
        return u + (b - u - self.inhibition(self.transfer(u))) / self.tau

    def encode(self, s: torch.Tensor) -> torch.Tensor:
        """The code a (B, F, H_c, W_c) of the preprocessed input s (B, C, H, W): ``iters`` steps
        from u = 0, then T_λ; on a CPU ``CPU_CHUNK`` images at a time (module docstring)."""
        if s.device.type == "cpu" and s.shape[0] > CPU_CHUNK:
            return torch.cat([self._relax(part) for part in s.split(CPU_CHUNK)])
        return self._relax(s)

    def _relax(self, s: torch.Tensor) -> torch.Tensor:
        """:meth:`encode` of one chunk s (B, C, H, W), (B, F, H_c, W_c)."""
        b = self.drive(s)
        u = torch.zeros_like(b)
        for _ in range(self.iters):
            u = self.step(u, b)
        return self.transfer(u)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, a): the preprocessed input (B, C, H, W) and its code (B, F, H_c, W_c)."""
        s = self.preprocess(x)
        return s, self.encode(s)

    # ------------------------------------------------------------------ reconstruction and metrics
    def frame(self, a: torch.Tensor) -> torch.Tensor:
        """Φ̄a on the zero-padded frame, (B, C, H + 2P, W + 2P)."""
        return F.pad(self.canvas(a), self._frame_padding)

    def reconstruct(self, a: torch.Tensor) -> torch.Tensor:
        """ŝ = Φa on the image, (B, C, H, W)."""
        _, h, w = self.input_shape
        p = self.padding
        return self.frame(a)[:, :, p:p + h, p:p + w]

    def objective(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """E(a) = ½‖s̄ − Φ̄a‖² + λ‖a‖₁ per sample (B,), on the zero-padded frame: the function
        the soft-threshold dynamics descend (module docstring)."""
        p = self.padding
        res = F.pad(s, (p, p, p, p)) - self.frame(a)
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
