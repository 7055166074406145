"""``LinearCox``: a linear Cox model on the clinical vector and the raw RNA vector, the form in which
a classical linear baseline (``CoxPH_Clin``, ``CoxNet_ClinRNA``: ``survfusion.training.baselines``)
travels in a bundle, so that the same container serves it with the same checks on bad input.

``risk = w_c . clinical + w_r . rna + b``; a fitted model's coefficients on standardised inputs are
folded into ``w`` and ``b`` once (``from_standardised``). The RNA score rides in the first entry of
the 128-d RNA embedding (the rest are 0), so a missing RNA file is replaced by its training mean like
any other model's; the slide is not used (``uses``), and the container does not embed it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from survfusion.nets.models import RNA_DIM, Embeddings, SurvivalModel
from survfusion.nets.registry import ModelDims, register


class _RnaScore(nn.Module):
    """``(B, G) -> (B, 128)``: the linear RNA score in column 0, zeros elsewhere."""

    def __init__(self, rna_dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(rna_dim, 1, bias=False)

    def forward(self, rna: torch.Tensor) -> torch.Tensor:
        return F.pad(self.score(rna), (0, RNA_DIM - 1))


@register("LinearCox")
class LinearCox(SurvivalModel):
    uses = ("rna", "clinical")

    def __init__(self, dims: ModelDims) -> None:
        nn.Module.__init__(self)
        self.dims = dims
        self.mil = None
        self.rna_encoder = _RnaScore(dims.rna_dim)
        self.clinical_score = nn.Linear(dims.clinical_dim, 1)

    def fuse(self, emb: Embeddings) -> torch.Tensor:
        return self.clinical_score(emb.clinical).squeeze(-1) + emb.rna[:, 0]

    @torch.no_grad()
    def from_standardised(
        self,
        beta: np.ndarray,
        mean: np.ndarray,
        sd: np.ndarray,
        clinical_columns: list[int],
        rna_columns: list[int],
    ) -> LinearCox:
        """Set the weights so that ``risk(x) = beta . (x[cols] - mean) / sd`` for the design columns
        ``clinical_columns`` (indices into the clinical vector) then ``rna_columns`` (into the RNA
        vector); every other input weighs 0."""
        w = np.asarray(beta, np.float64) / np.asarray(sd, np.float64)
        n_clin = len(clinical_columns)
        clin_w = np.zeros(self.dims.clinical_dim)
        clin_w[clinical_columns] = w[:n_clin]
        rna_w = np.zeros(self.dims.rna_dim)
        rna_w[rna_columns] = w[n_clin:]
        self.clinical_score.weight.copy_(torch.from_numpy(clin_w)[None])
        self.clinical_score.bias.fill_(float(-np.dot(w, mean)))
        rna_score = self.rna_encoder
        assert isinstance(rna_score, _RnaScore)
        rna_score.score.weight.copy_(torch.from_numpy(rna_w)[None])
        return self
