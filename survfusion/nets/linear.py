"""``LinearCox``: a linear Cox model on the clinical vector and the raw RNA vector, the form in which
a classical linear baseline (``CoxPH_Clin``, ``CoxNet_ClinRNA``: ``survfusion.training.baselines``)
travels in a bundle, so that the same container serves it with the same checks on bad input.

``risk = w_c . clinical + w_r . rna + b``; a fitted model's coefficients on standardised inputs are
folded into ``w`` and ``b`` once (``from_standardised``). The RNA score rides in the first entry of
the 128-d RNA embedding (the rest are 0), so a missing RNA file is replaced by its training mean like
any other model's; the slide is not used (``uses``), and the container does not embed it.

``LinearCox_Hist`` (``CoxNet_ClinRNAHist``) adds ``w_h . mean_n(tiles_n)``: the slide's mean tile
embedding, whose principal-component scores the baseline was fitted on, is linear in the tiles, so
the projection folds into one ``Linear(D, 1)`` too; its score rides in the first entry of the 512-d
slide embedding, and the "attention" it reports is the mean's uniform weight.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from survfusion.nets.models import HIST_DIM, RNA_DIM, Embeddings, SurvivalModel
from survfusion.nets.registry import ModelDims, register


class _RnaScore(nn.Module):
    """``(B, G) -> (B, 128)``: the linear RNA score ``w . (rna - center)`` in column 0, zeros
    elsewhere; ``center`` (the training means) is subtracted first, since over 2,048 log
    expressions ``w . center`` folded into a bias would cancel most of float32's digits."""

    def __init__(self, rna_dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(rna_dim, 1, bias=False)
        self.center: torch.Tensor
        self.register_buffer("center", torch.zeros(rna_dim))

    def forward(self, rna: torch.Tensor) -> torch.Tensor:
        return F.pad(self.score(rna - self.center), (0, RNA_DIM - 1))


class _MeanScore(nn.Module):
    """``(B, N, D), mask -> (B, 512), (B, N)``: ``w . (mean of the real tiles - center)`` in column 0,
    and the mean's weights (1/n on each real tile; a bag without tiles has mean 0). ``center`` (the
    training mean) is subtracted before the product: slides' means differ little, and folding
    ``w . center`` into a bias would cancel most of float32's digits."""

    def __init__(self, feat_dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(feat_dim, 1, bias=False)
        self.center: torch.Tensor
        self.register_buffer("center", torch.zeros(feat_dim))

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight = mask.to(torch.float64)
        weight = weight / weight.sum(dim=1, keepdim=True).clamp(min=1.0)
        # in float64: the low principal components of slide means weigh a few small differences heavily
        tiles = features.masked_fill(~mask.unsqueeze(-1), 0.0).double()
        mean = torch.einsum("bn,bnd->bd", weight, tiles)
        score = (mean - self.center.double()) @ self.score.weight.double().T
        return F.pad(score.to(features.dtype), (0, HIST_DIM - 1)), weight.to(features.dtype)


@register("LinearCox")
class LinearCox(SurvivalModel):
    uses: tuple[str, ...] = ("rna", "clinical")

    def __init__(self, dims: ModelDims) -> None:
        nn.Module.__init__(self)
        self.dims = dims
        self.mil = _MeanScore(dims.feat_dim) if "hist" in self.uses else None
        self.rna_encoder = _RnaScore(dims.rna_dim)
        self.clinical_score = nn.Linear(dims.clinical_dim, 1)

    def fuse(self, emb: Embeddings) -> torch.Tensor:
        return self.clinical_score(emb.clinical).squeeze(-1) + emb.rna[:, 0] + emb.hist[:, 0]

    def rna_reference(self) -> torch.Tensor:
        """``(G,)``: the training mean of each RNA input the model weighs (0 where it weighs none),
        the input-space reference an attribution starts from (``training.explain``)."""
        assert isinstance(self.rna_encoder, _RnaScore)
        return self.rna_encoder.center.detach()

    @torch.no_grad()
    def from_standardised(
        self,
        beta: np.ndarray,
        mean: np.ndarray,
        sd: np.ndarray,
        clinical_columns: list[int],
        rna_columns: list[int],
        hist_columns: list[int] = (),  # type: ignore[assignment]
        hist_projection: dict[str, np.ndarray] | None = None,
    ) -> LinearCox:
        """Set the weights so that ``risk(x) = beta . (x[cols] - mean) / sd`` for the design columns
        ``clinical_columns`` (indices into the clinical vector), then ``rna_columns`` (into the RNA
        vector), then ``hist_columns`` (into the slide's principal-component scores
        ``components @ ((mean tile - center) / scale)`` of ``hist_projection``); every other input
        weighs 0."""
        w = np.asarray(beta, np.float64) / np.asarray(sd, np.float64)
        n_clin, n_rna = len(clinical_columns), len(rna_columns)
        clin_w = np.zeros(self.dims.clinical_dim)
        clin_w[clinical_columns] = w[:n_clin]
        rna_w = np.zeros(self.dims.rna_dim)
        rna_w[rna_columns] = w[n_clin : n_clin + n_rna]
        rna_center = np.zeros(self.dims.rna_dim)
        rna_center[rna_columns] = mean[n_clin : n_clin + n_rna]
        bias = -np.dot(w[:n_clin], mean[:n_clin]) - np.dot(w[n_clin + n_rna :], mean[n_clin + n_rna :])
        if len(hist_columns):
            assert hist_projection is not None and isinstance(self.mil, _MeanScore)
            v = w[n_clin + n_rna :]
            u = hist_projection["components"][list(hist_columns)].T @ v / hist_projection["scale"]
            self.mil.center.copy_(torch.from_numpy(hist_projection["center"]))
            self.mil.score.weight.copy_(torch.from_numpy(u)[None])
        self.clinical_score.weight.copy_(torch.from_numpy(clin_w)[None])
        self.clinical_score.bias.fill_(float(bias))
        rna_score = self.rna_encoder
        assert isinstance(rna_score, _RnaScore)
        rna_score.score.weight.copy_(torch.from_numpy(rna_w)[None])
        rna_score.center.copy_(torch.from_numpy(rna_center))
        return self


@register("LinearCox_Hist")
class LinearCoxHist(LinearCox):
    uses = ("hist", "rna", "clinical")
