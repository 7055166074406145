"""One fitted input design: every statistic a model's inputs need, fitted on a pool of patients and
applied to any patient, in scikit-learn's shape (``fit(data, pool) -> self``, fitted state in
attributes ending in ``_``).

Fitted on the pool only (never on a test or an inner held-out patient):

- ``clinical_``: the clinical encoder (means and sds of the numeric fields; categories from the schema);
- ``rna_``: the RNA vectorizer: the genes kept (the ``top_genes`` of highest ``select`` score over the
  pool: ``variance`` or ``mad`` of ``log1p`` expression), the per-gene training maxima (the bound
  on implausible values), ``log1p``, and optionally ``rna_pca`` principal components of the
  standardised genes (``RnaVectorizer.projection``);
- ``hist_`` (``hist_pca``, the slide-aware baselines only): the mean of a slide's tile embeddings,
  centred and reduced to ``hist_pca`` principal components.

The deep models take ``clinical`` and ``rna`` as their inputs; the baselines take ``matrix``, the
three standardised and concatenated (``LinearInputs``). The bundle saves ``clinical_`` and ``rna_``
as each member's preprocessing (``ClinicalEncoder``/``RnaVectorizer`` JSON), so the container
applies exactly what training fitted; ``hist_`` travels folded into a linear model's weights
(``survfusion.nets.linear``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from survfusion.errors import UserError
from survfusion.serving.preprocess import ClinicalEncoder, RnaVectorizer, reference_genes
from survfusion.training.dataset import CohortData

SELECTIONS = ("variance", "mad")
PCA_RTOL = 1e-4  # components kept: singular value above this fraction of the first's


def gene_scores(raw: np.ndarray, how: str) -> np.ndarray:
    """Per gene over the rows of ``raw`` (repaired values): the variance or the median absolute
    deviation of ``log1p`` expression."""
    x = np.log1p(np.clip(raw, 0, None))
    if how == "variance":
        return x.var(axis=0)
    if how == "mad":
        return np.median(np.abs(x - np.median(x, axis=0)), axis=0)
    raise UserError(f"config: rna_select must be one of {', '.join(SELECTIONS)}, got {how!r}")


def top_columns(scores: np.ndarray, k: int | None) -> np.ndarray:
    """The ``k`` highest-scoring columns in their original order (all of them when ``k`` is None); a
    tie keeps the earlier column."""
    if not k or k >= len(scores):
        return np.arange(len(scores))
    return np.sort(np.argsort(-scores, kind="stable")[:k])


def pca_projection(x: np.ndarray, k: int, *, standardise: bool = True) -> dict[str, np.ndarray]:
    """The ``k`` leading principal axes of the rows of ``x`` (P, F), centred and, with
    ``standardise``, scaled to unit sd (genes: a column constant over the rows has scale 1):
    ``center``/``scale`` (F,), ``components`` (at most k, F; fewer where the rows span fewer
    directions above ``PCA_RTOL``) orthonormal, each signed so that its largest loading is positive
    (a deterministic sign). Embeddings are only centred: their dimensions share
    one scale, and dividing by a near-constant dimension's sd would blow it up."""
    if not k >= 1:
        raise UserError(f"config: a PCA needs at least 1 component, got {k}")
    center = x.mean(axis=0)
    scale = x.std(axis=0) if standardise else np.ones(x.shape[1])
    scale = np.where(scale > 0, scale, 1.0)
    z = (x - center) / scale
    _, sv, vt = np.linalg.svd(z, full_matrices=False)
    # a direction whose spread is below PCA_RTOL of the leading one is rounding, not signal (the
    # inputs are float32): standardising its scores would blow that rounding up to unit variance
    rank = max(1, int(np.count_nonzero(sv > PCA_RTOL * sv[0]))) if len(sv) else 1
    comps = vt[: min(k, rank)]
    flip = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    return {"center": center, "scale": scale, "components": comps * flip[:, None]}


def project(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    return ((x - p["center"]) / p["scale"]) @ p["components"].T


def mean_embeddings(data: CohortData, idx) -> np.ndarray:
    """``(P, D)`` float64: the mean tile embedding of each patient's slide (0 for a bag without tiles)."""
    out = np.zeros((len(idx), int(data.bags[0].shape[1])))
    for row, i in enumerate(idx):
        if len(data.bags[i]):
            out[row] = data.bags[i].double().mean(0).numpy()
    return out


class InputDesign:
    """The inputs of a model, fitted on a pool (module docstring). ``rna=False`` keeps one gene
    (a clinical-only model's bundle still carries an RNA vector)."""

    def __init__(
        self,
        *,
        top_genes: int | None = None,
        select: str = "variance",
        log1p: bool = False,
        rna_pca: int | None = None,
        hist_pca: int | None = None,
        rna: bool = True,
    ) -> None:
        if select not in SELECTIONS:
            raise UserError(f"config: rna_select must be one of {', '.join(SELECTIONS)}, got {select!r}")
        self.top_genes, self.select, self.log1p = top_genes, select, log1p
        self.rna_pca, self.hist_pca, self.use_rna = rna_pca, hist_pca, rna

    @classmethod
    def from_config(cls, cfg, **extra) -> InputDesign:
        """The design a ``TrainConfig`` asks for (``rna_top_genes``, ``rna_select``, ``rna_log1p``,
        ``rna_pca``)."""
        return cls(
            top_genes=cfg.rna_top_genes, select=cfg.rna_select, log1p=cfg.rna_log1p, rna_pca=cfg.rna_pca,
            **extra,
        )  # fmt: skip

    def fit(self, data: CohortData, pool: np.ndarray) -> InputDesign:
        pool = np.asarray(pool)
        self.clinical_ = ClinicalEncoder.fit([data.clinical[i] for i in pool])
        raw = data.raw_rna()
        if self.use_rna:
            cols = top_columns(gene_scores(raw[pool], self.select), self.top_genes)
        else:
            cols = np.arange(1)
        all_genes = reference_genes()
        rna = RnaVectorizer([all_genes[c] for c in cols], log1p=self.log1p).with_train_max(raw[pool][:, cols])
        if self.use_rna and self.rna_pca:
            rna = rna.with_projection(pca_projection(rna.finish(raw[pool][:, cols]), self.rna_pca))
        self.rna_, self.rna_columns_ = rna, cols
        self.hist_ = (
            pca_projection(mean_embeddings(data, pool), self.hist_pca, standardise=False)
            if self.hist_pca
            else None
        )
        return self

    def clinical(self, data: CohortData, idx=None) -> np.ndarray:
        """``(P, C)`` float32 clinical inputs of patients ``idx`` (default all)."""
        idx = range(len(data)) if idx is None else idx
        return np.stack([self.clinical_.transform(data.clinical[i]).values for i in idx])

    def rna(self, data: CohortData, idx=None) -> np.ndarray:
        """``(P, rna_.dim)`` float32: what ``rna_.transform`` gives each patient's file."""
        raw = data.raw_rna()
        rows = raw[:, self.rna_columns_] if idx is None else raw[np.asarray(idx)][:, self.rna_columns_]
        return self.rna_.finish(rows).astype(np.float32)

    def hist(self, data: CohortData, idx=None) -> np.ndarray:
        """``(P, hist_pca)``: the slide's mean tile embedding projected (``hist_pca`` must be set)."""
        if self.hist_ is None:
            raise UserError("design: this design has no slide projection (hist_pca)")
        idx = range(len(data)) if idx is None else idx
        return project(mean_embeddings(data, idx), self.hist_)


@dataclass
class LinearInputs:
    """A baseline's design matrix: clinical, then RNA, then (if fitted) slide columns, each
    standardised by the pool's ``mean``/``sd``; a column constant in the pool is dropped. ``keep``
    indexes the concatenation [clinical (C), RNA (rna_.dim), slide (hist_pca)]."""

    design: InputDesign
    mean: np.ndarray
    sd: np.ndarray
    keep: np.ndarray

    @classmethod
    def fit(cls, design: InputDesign, data: CohortData, pool: np.ndarray) -> LinearInputs:
        x = _concat(design, data, pool)
        mean, sd = x.mean(axis=0), x.std(axis=0)
        keep = np.flatnonzero(sd > 0)  # constant in training (a category no training patient has)
        return cls(design, mean[keep], sd[keep], keep)

    def matrix(self, data: CohortData, idx) -> np.ndarray:
        return (_concat(self.design, data, idx)[:, self.keep] - self.mean) / self.sd

    def split_columns(self) -> tuple[list[int], list[int], list[int]]:
        """Kept columns as indices into the clinical vector, the RNA vector and the slide scores."""
        n_clin = self.design.clinical_.dim
        n_rna = self.design.rna_.dim if self.design.use_rna else 0
        k = [int(c) for c in self.keep]
        return (
            [c for c in k if c < n_clin],
            [c - n_clin for c in k if n_clin <= c < n_clin + n_rna],
            [c - n_clin - n_rna for c in k if c >= n_clin + n_rna],
        )


def _concat(design: InputDesign, data: CohortData, idx) -> np.ndarray:
    parts = [design.clinical(data, idx).astype(np.float64)]
    if design.use_rna:
        parts.append(design.rna(data, idx).astype(np.float64))
    if design.hist_ is not None:
        parts.append(design.hist(data, idx))
    return np.concatenate(parts, axis=1)
