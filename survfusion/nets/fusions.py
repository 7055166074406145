"""Fusion comparators (the paper's Table 1) and unimodal/bimodal ablations, on the shared encoders.

- ``LMF``: low-rank multimodal fusion (Liu et al., ACL 2018) over [hist; 1], [rna; 1], [clin; 1]:
  ``h = sum_r w_r prod_m (W_m^(r) [z_m; 1]) + b`` (an R-rank factorisation of the outer product of
  the three augmented vectors), then ``risk = Linear(h)``.
- ``HFBSurv``: hierarchical factorised bilinear fusion in the style of Li et al. (2022): intra-modal
  factorised bilinear pooling of each modality with itself, inter-modal pooling of each pair of those,
  then a linear Cox head over all six.
- Ablations (``ABMIL_Hist``, ``RNA_Clin``, ``ABMIL_Hist_RNA``, ``ABMIL_Hist_Clin``, ``RNA_only``,
  ``Clin_only``): a linear Cox head on the concatenation of the modalities they use.
"""

from __future__ import annotations

import torch
from torch import nn

from survfusion.nets.dropout import Dropout
from survfusion.nets.models import (
    HIST_DIM,
    RNA_DIM,
    Embeddings,
    LowRankBilinear,
    ModelDims,
    SurvivalModel,
)
from survfusion.nets.registry import register

_DIMS = {"hist": HIST_DIM, "rna": RNA_DIM}


def _width(name: str, dims: ModelDims) -> int:
    return dims.clinical_dim if name == "clinical" else _DIMS[name]


@register("LMF")
class LowRankMultimodalFusion(SurvivalModel):
    lmf_rank = 4

    def __init__(self, dims: ModelDims) -> None:
        super().__init__(dims)
        h = dims.rank
        self.factors = nn.ParameterDict(
            {
                m: nn.Parameter(
                    torch.randn(self.lmf_rank, _width(m, dims) + 1, h) * (2.0 / (_width(m, dims) + h)) ** 0.5
                )
                for m in self.uses
            }
        )
        self.rank_weights = nn.Parameter(torch.full((1, self.lmf_rank), 1.0 / self.lmf_rank))
        self.bias = nn.Parameter(torch.zeros(1, h))
        self.dropout = Dropout(dims.dropout)
        self.head = nn.Linear(h, 1)

    def fuse(self, emb: Embeddings) -> torch.Tensor:
        fused = None
        for m, z in (("hist", emb.hist), ("rna", emb.rna), ("clinical", emb.clinical)):
            z1 = torch.cat([z, z.new_ones(z.shape[0], 1)], dim=1)
            proj = torch.einsum("bd,rdh->rbh", z1, self.factors[m])  # (R, B, h)
            fused = proj if fused is None else fused * proj
        h = torch.einsum("or,rbh->bh", self.rank_weights, fused) + self.bias
        return self.head(self.dropout(h)).squeeze(-1)


class FactorizedBilinearPooling(nn.Module):
    """MFB: ``z = SumPool_k((U a) * (V b))`` to ``out`` dims, then signed square root."""

    def __init__(self, dim_a: int, dim_b: int, out: int, k: int, dropout: float) -> None:
        super().__init__()
        self.out, self.k = out, k
        self.u = nn.Linear(dim_a, out * k)
        self.v = nn.Linear(dim_b, out * k)
        self.dropout = Dropout(dropout)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        z = self.dropout(self.u(a) * self.v(b)).view(-1, self.out, self.k).sum(-1)
        return torch.sign(z) * torch.sqrt(z.abs() + 1e-8)


@register("HFBSurv")
class HierarchicalFactorizedBilinear(SurvivalModel):
    out_dim, k = 32, 4

    def __init__(self, dims: ModelDims) -> None:
        super().__init__(dims)
        w = {m: _width(m, dims) for m in ("hist", "rna", "clinical")}
        o, k, p = self.out_dim, self.k, dims.dropout
        self.intra = nn.ModuleDict({m: FactorizedBilinearPooling(w[m], w[m], o, k, p) for m in w})
        self.pairs = (("hist", "rna"), ("hist", "clinical"), ("rna", "clinical"))
        self.inter = nn.ModuleDict(
            {f"{a}_{b}": FactorizedBilinearPooling(o, o, o, k, p) for a, b in self.pairs}
        )
        self.head = nn.Linear(6 * o, 1)

    def fuse(self, emb: Embeddings) -> torch.Tensor:
        z = emb.as_dict()
        low = {m: self.intra[m](v, v) for m, v in z.items()}
        high = [self.inter[f"{a}_{b}"](low[a], low[b]) for a, b in self.pairs]
        return self.head(torch.cat([*low.values(), *high], dim=1)).squeeze(-1)


class ConcatSurv(SurvivalModel):
    """``risk = Linear(concat of the used modality embeddings)``."""

    def __init__(self, dims: ModelDims) -> None:
        super().__init__(dims)
        self.head = nn.Linear(sum(_width(m, dims) for m in self.uses), 1)

    def fuse(self, emb: Embeddings) -> torch.Tensor:
        parts = emb.as_dict()
        return self.head(torch.cat([parts[m] for m in self.uses], dim=1)).squeeze(-1)


for _name, _uses in {
    "ABMIL_Hist": ("hist",),
    "RNA_only": ("rna",),
    "Clin_only": ("clinical",),
    "RNA_Clin": ("rna", "clinical"),
    "ABMIL_Hist_RNA": ("hist", "rna"),
    "ABMIL_Hist_Clin": ("hist", "clinical"),
}.items():
    register(_name)(type(_name, (ConcatSurv,), {"uses": _uses, "__doc__": f"Ablation: {', '.join(_uses)}."}))


class PairSurv(SurvivalModel):
    """Two modalities through one low-rank bilinear pair, as the reference code's ablations do:
    ``risk = Linear(out(f1(a) * f2(b)))`` with the pair's width in ABMIL_Surv_PG (hist x rna -> 64,
    hist x clinical -> 32)."""

    pair: tuple[str, str, int] = ("hist", "rna", 64)

    def __init__(self, dims: ModelDims) -> None:
        super().__init__(dims)
        a, b, width = self.pair
        self.bilinear = LowRankBilinear(_width(a, dims), _width(b, dims), dims.rank, width)
        self.head = nn.Linear(width, 1)

    def fuse(self, emb: Embeddings) -> torch.Tensor:
        parts = emb.as_dict()
        a, b, _ = self.pair
        return self.head(self.bilinear(parts[a], parts[b])).squeeze(-1)


for _name, _pair in {
    "ABMIL_Hist_RNA_PG": ("hist", "rna", 64),
    "ABMIL_Hist_Clin_PG": ("hist", "clinical", 32),
}.items():
    _doc = f"Ablation: {_pair[0]} x {_pair[1]} through one bilinear pair (the reference code's)."
    register(_name)(type(_name, (PairSurv,), {"uses": _pair[:2], "pair": _pair, "__doc__": _doc}))
