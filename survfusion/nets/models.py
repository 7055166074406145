"""The paper's survival models: gated-attention MIL over tiles, an RNA MLP, the clinical vector, fused.

Shapes used throughout: ``B`` patients, ``N`` tiles per (padded) bag, ``D`` tile-feature size,
``G`` genes, ``C`` clinical inputs. Every model maps ``(features (B, N, D), clinical (B, C),
rna (B, G), mask (B, N))`` to a Cox log-risk ``(B,)``: larger means earlier recurrence.

Architecture (docs/DESIGN.md, "The method, exactly")::

    tiles  --Linear(D,512) ReLU Drop--> h (B,N,512) --gated attention--> a (B,N) --sum a*h--> hist (B,512)
    genes  --Linear(G,2048) ReLU Drop -> Linear(2048,512) ReLU Drop -> Linear(512,128) ReLU--> rna (B,128)
    clinical (B,27) is used as it is
    ABMIL_Surv        risk = Linear(concat[hist, clin, rna])
    ABMIL_Surv_PG     risk = Linear(concat[B(hist,rna)->64, B(hist,clin)->32, B(rna,clin)->32])
    ABMIL_Surv_PG_Res risk = Linear(concat[pairwise 128, ReLU(Linear(concat[hist, rna, clin]) -> 128)])

where ``B(a, b) = out(f1(a) * f2(b))`` is a low-rank bilinear fusion with ``f1, f2`` linear maps to
``rank`` dimensions (the Hadamard product of two projections is a rank-``rank`` factorisation of a
full bilinear form ``a^T W_k b``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch
from torch import nn

from survfusion.nets.dropout import Dropout
from survfusion.nets.registry import ModelDims, build_model, model_names, register  # noqa: F401 (public here too)

HIST_DIM = 512
ATTN_DIM = 256
RNA_HIDDEN = (2048, 512)
RNA_DIM = 128


@dataclass(frozen=True)
class Embeddings:
    """Per-modality embeddings of a batch, before fusion.

    Args:
        hist: slide vector ``(B, 512)``, the attention-weighted mean of the tile embeddings.
        rna: RNA embedding ``(B, 128)``.
        clinical: the clinical vector ``(B, C)``, unchanged.
        attention: tile weights ``(B, N)``; each real bag sums to 1, padding and empty bags are 0.
    """

    hist: torch.Tensor
    rna: torch.Tensor
    clinical: torch.Tensor
    attention: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The three modalities by name (``MODALITIES``' names): what the fusions combine."""
        return {"hist": self.hist, "rna": self.rna, "clinical": self.clinical}


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1 restricted to ``mask``; rows without any True give all zeros, never NaN."""
    scores = scores.masked_fill(~mask, float("-inf"))
    empty = ~mask.any(dim=1, keepdim=True)
    scores = scores.masked_fill(empty, 0.0)
    return torch.softmax(scores, dim=1) * mask


class GatedAttentionMIL(nn.Module):
    """Gated attention pooling (Ilse et al. 2018) over a padded bag of tile features.

    ``a_n = softmax_n( w^T (tanh(V h_n) * sigmoid(U h_n)) )`` over the real tiles, ``hist = sum_n a_n h_n``.
    """

    def __init__(self, feat_dim: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(feat_dim, HIST_DIM), nn.ReLU(), Dropout(dropout))
        self.attn_tanh = nn.Sequential(nn.Linear(HIST_DIM, ATTN_DIM), nn.Tanh(), Dropout(dropout))
        self.attn_gate = nn.Sequential(nn.Linear(HIST_DIM, ATTN_DIM), nn.Sigmoid(), Dropout(dropout))
        self.attn_score = nn.Linear(ATTN_DIM, 1)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.embed(features)
        # Padding never reaches the output: its embedding is zeroed and its weight is exactly 0.
        h = h.masked_fill(~mask.unsqueeze(-1), 0.0)
        scores = self.attn_score(self.attn_tanh(h) * self.attn_gate(h)).squeeze(-1)
        attention = masked_softmax(scores, mask)
        return torch.einsum("bn,bnh->bh", attention, h), attention


class RnaEncoder(nn.Sequential):
    """Genes -> 2048 -> 512 -> 128, ReLU + dropout after each hidden layer, final ReLU."""

    def __init__(self, rna_dim: int, dropout: float) -> None:
        layers: list[nn.Module] = []
        sizes = (rna_dim, *RNA_HIDDEN)
        for n_in, n_out in pairwise(sizes):
            layers += [nn.Linear(n_in, n_out), nn.ReLU(), Dropout(dropout)]
        layers += [nn.Linear(sizes[-1], RNA_DIM), nn.ReLU()]
        super().__init__(*layers)


class LowRankBilinear(nn.Module):
    """``out(f1(a) * f2(b))``: a bilinear interaction of two vectors factorised to ``rank``."""

    def __init__(self, dim_a: int, dim_b: int, rank: int, out_dim: int) -> None:
        super().__init__()
        self.f1 = nn.Linear(dim_a, rank)
        self.f2 = nn.Linear(dim_b, rank)
        self.out = nn.Linear(rank, out_dim)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.out(self.f1(a) * self.f2(b))


class SurvivalModel(nn.Module):
    """Shared encoders; subclasses define ``fuse`` (embeddings -> risk ``(B,)``).

    ``uses`` names the modalities a model reads; an unused modality gets no encoder (and so no
    parameters) and enters ``fuse`` as zeros, so ablations keep the common forward signature.
    """

    uses: tuple[str, ...] = ("hist", "rna", "clinical")

    def __init__(self, dims: ModelDims) -> None:
        super().__init__()
        self.dims = dims
        self.mil: nn.Module | None = (
            GatedAttentionMIL(dims.feat_dim, dims.dropout) if "hist" in self.uses else None
        )
        self.rna_encoder: nn.Module | None = (
            RnaEncoder(dims.rna_dim, dims.dropout) if "rna" in self.uses else None
        )

    def encode(
        self,
        features: torch.Tensor,
        clinical: torch.Tensor,
        rna: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> Embeddings:
        """Embed each modality. ``mask`` (B, N) bool, True = real tile; None = all tiles real."""
        mask = self._check_inputs(features, clinical, rna, mask)
        b, n = mask.shape
        if self.mil is not None:
            hist, attention = self.mil(features, mask)
        else:
            hist, attention = features.new_zeros(b, HIST_DIM), features.new_zeros(b, n)
        rna_emb = self.rna_encoder(rna) if self.rna_encoder is not None else rna.new_zeros(b, RNA_DIM)
        if "clinical" not in self.uses:
            clinical = torch.zeros_like(clinical)
        return Embeddings(hist=hist, rna=rna_emb, clinical=clinical, attention=attention)

    def fuse(self, emb: Embeddings) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        features: torch.Tensor,
        clinical: torch.Tensor,
        rna: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Risk ``(B,)``; with ``return_attention`` also the tile weights ``(B, N)``."""
        emb = self.encode(features, clinical, rna, mask)
        risk = self.fuse(emb)
        return (risk, emb.attention) if return_attention else risk

    def _check_inputs(self, features, clinical, rna, mask) -> torch.Tensor:
        d = self.dims
        if features.dim() != 3 or features.shape[-1] != d.feat_dim:
            raise ValueError(f"features: expected (B, N, {d.feat_dim}), got {tuple(features.shape)}")
        b, n = features.shape[:2]
        if tuple(clinical.shape) != (b, d.clinical_dim):
            raise ValueError(f"clinical: expected ({b}, {d.clinical_dim}), got {tuple(clinical.shape)}")
        if tuple(rna.shape) != (b, d.rna_dim):
            raise ValueError(f"rna: expected ({b}, {d.rna_dim}), got {tuple(rna.shape)}")
        if mask is None:
            return torch.ones(b, n, dtype=torch.bool, device=features.device)
        if tuple(mask.shape) != (b, n) or mask.dtype != torch.bool:
            raise ValueError(f"mask: expected bool ({b}, {n}), got {mask.dtype} {tuple(mask.shape)}")
        return mask


@register("ABMIL_Surv")
class AbmilSurv(SurvivalModel):
    """Late fusion by concatenation: ``risk = w^T [hist; clin; rna] + b``."""

    def __init__(self, dims: ModelDims) -> None:
        super().__init__(dims)
        self.head = nn.Linear(HIST_DIM + dims.clinical_dim + RNA_DIM, 1)

    def fuse(self, emb: Embeddings) -> torch.Tensor:
        return self.head(torch.cat([emb.hist, emb.clinical, emb.rna], dim=1)).squeeze(-1)


@register("ABMIL_Surv_PG")
class AbmilSurvPG(SurvivalModel):
    """Pairwise low-rank bilinear fusion of the three modalities (the paper's method)."""

    def __init__(self, dims: ModelDims) -> None:
        super().__init__(dims)
        c, r = dims.clinical_dim, dims.rank
        self.hist_rna = LowRankBilinear(HIST_DIM, RNA_DIM, r, 64)
        self.hist_clin = LowRankBilinear(HIST_DIM, c, r, 32)
        self.rna_clin = LowRankBilinear(RNA_DIM, c, r, 32)
        self.head = nn.Linear(self.pair_dim, 1)

    pair_dim = 64 + 32 + 32

    def pairs(self, emb: Embeddings) -> torch.Tensor:
        return torch.cat(
            [
                self.hist_rna(emb.hist, emb.rna),
                self.hist_clin(emb.hist, emb.clinical),
                self.rna_clin(emb.rna, emb.clinical),
            ],
            dim=1,
        )

    def fuse(self, emb: Embeddings) -> torch.Tensor:
        return self.head(self.pairs(emb)).squeeze(-1)


@register("ABMIL_Surv_PG_Res")
class AbmilSurvPGRes(AbmilSurvPG):
    """Pairwise fusion plus a residual path over the concatenated unimodal embeddings."""

    res_dim = 128

    def __init__(self, dims: ModelDims) -> None:
        super().__init__(dims)
        self.residual = nn.Sequential(
            nn.Linear(HIST_DIM + RNA_DIM + dims.clinical_dim, self.res_dim), nn.ReLU()
        )
        self.head = nn.Linear(self.pair_dim + self.res_dim, 1)

    def fuse(self, emb: Embeddings) -> torch.Tensor:
        res = self.residual(torch.cat([emb.hist, emb.rna, emb.clinical], dim=1))
        return self.head(torch.cat([self.pairs(emb), res], dim=1)).squeeze(-1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def pad_bags(bags: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack bags of different sizes ``(n_i, D)`` into ``(B, max n_i, D)`` zeros-padded + bool mask."""
    if not bags:
        raise ValueError("pad_bags: no bags")
    n_max = max(1, max(len(b) for b in bags))
    out = bags[0].new_zeros(len(bags), n_max, bags[0].shape[-1])
    mask = torch.zeros(len(bags), n_max, dtype=torch.bool, device=bags[0].device)
    for i, bag in enumerate(bags):
        out[i, : len(bag)] = bag
        mask[i, : len(bag)] = True
    return out, mask


@torch.no_grad()
def mean_embeddings(
    model: SurvivalModel, bags: list[torch.Tensor], clinical: torch.Tensor, rna: torch.Tensor, *,
    batch_size: int = 16, device: torch.device | str | None = None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Mean of each modality's embedding over ``P`` patients (eval mode), float64: the stand-in for
    a modality that is missing at inference (computed over the training patients)."""
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    sums: dict[str, torch.Tensor] = {}
    for s in range(0, len(bags), batch_size):
        feats, mask = pad_bags(bags[s : s + batch_size])
        emb = model.encode(
            feats.to(device), clinical[s : s + batch_size].to(device), rna[s : s + batch_size].to(device),
            mask.to(device),
        )  # fmt: skip
        for k, v in emb.as_dict().items():
            sums[k] = sums.get(k, 0) + v.double().sum(0).cpu()
    return {k: (v / len(bags)).numpy() for k, v in sums.items()}


@torch.inference_mode()
def batched_risks(
    model: SurvivalModel,
    bags: list[torch.Tensor],
    clinical: torch.Tensor,
    rna: torch.Tensor,
    *,
    batch_size: int = 16,
    device: torch.device | str | None = None,
    replace: dict[str, torch.Tensor] | None = None,
    attention: bool = False,
):
    """Risks ``(P,)`` (float64 numpy) of ``P`` patients in eval mode, ``batch_size`` at a time: the
    one place training, evaluation, the bundle and the container compute risks.

    Args:
        bags: ``P`` tile-feature bags ``(n_i, D)``; an empty bag ``(0, D)`` is a patient without tiles.
        clinical: ``(P, C)``; rna: ``(P, G)``.
        replace: modality (``hist``, ``rna``, ``clinical``) -> embedding ``(E,)`` used instead of the
            patient's own (the training mean, when an input is unusable at inference).
        attention: also return each bag's tile weights (a list of ``(n_i,)`` arrays).
    """
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    risks, weights = [], []
    for s in range(0, len(bags), batch_size):
        feats, mask = pad_bags(bags[s : s + batch_size])
        emb = model.encode(
            feats.to(device),
            clinical[s : s + batch_size].to(device),
            rna[s : s + batch_size].to(device),
            mask.to(device),
        )
        if replace:
            parts = emb.as_dict()
            for name, value in replace.items():
                parts[name] = value.to(parts[name]).expand_as(parts[name])
            emb = Embeddings(parts["hist"], parts["rna"], parts["clinical"], emb.attention)
        risks.append(model.fuse(emb).double().cpu())
        if attention:
            weights += [emb.attention[k, : int(mask[k].sum())].cpu().numpy() for k in range(len(mask))]
    out = torch.cat(risks).numpy() if risks else np.zeros(0)
    return (out, weights) if attention else out
