"""What the numbers behind the pictures say: modality gap, alignment and uniformity, hubness.

- Modality gap (Liang et al. 2022): the distance between the centroids of the two modalities' L2-normalised
  embeddings. Contrastive spaces keep the modalities apart in separate cones; a large gap is not
  necessarily bad for retrieval, but it is why a UMAP of both sides shows two islands.
- Alignment and uniformity (Wang & Isola 2020): the mean squared distance between the normalised members
  of a pair (lower is better), and ``log E exp(-2 ||x - y||^2)`` over all pairs within one modality
  (lower: spread more evenly over the sphere).
- Hubness (Radovanović et al. 2010): ``N_k(j)``, how often gallery item j is among the k nearest of a
  query. A skewed ``N_k`` means a few hubs answer most queries. Reported: its skewness, the share of all
  top-k slots held by the top 1% of items, and the share of items that no query retrieves.
- Retrieval-time corrections, scored against plain cosine: CSLS (Conneau et al. 2018) subtracts each
  item's mean similarity to its k nearest of the other side; query-bank normalisation (Bogolin et al.
  2022, inverted softmax) divides each gallery item's score by how strongly a bank of training queries
  prefers it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import as_tensor

MAX_PAIRWISE = 2000  # rows used for the O(n^2) uniformity


def modality_gap(za: np.ndarray | torch.Tensor, zb: np.ndarray | torch.Tensor) -> float:
    na, nb = F.normalize(as_tensor(za), dim=-1), F.normalize(as_tensor(zb), dim=-1)
    return float((na.mean(0) - nb.mean(0)).norm())


def alignment(za: np.ndarray | torch.Tensor, zb: np.ndarray | torch.Tensor) -> float:
    na, nb = F.normalize(as_tensor(za), dim=-1), F.normalize(as_tensor(zb), dim=-1)
    return float((na - nb).pow(2).sum(1).mean())


def uniformity(z: np.ndarray | torch.Tensor, t: float = 2.0, seed: int = 0) -> float:
    x = F.normalize(as_tensor(z), dim=-1)
    if x.shape[0] > MAX_PAIRWISE:
        pick = np.random.default_rng(seed).choice(x.shape[0], MAX_PAIRWISE, replace=False)
        x = x[torch.from_numpy(np.sort(pick))]
    if x.shape[0] < 2:
        return float("nan")
    d2 = torch.pdist(x.double()).pow(2)
    return float(torch.logsumexp(-t * d2, 0) - np.log(d2.numel()))


def hubness(sim: torch.Tensor, k: int = 10) -> dict[str, float]:
    """k-occurrence statistics of the gallery (columns of ``sim``) under the queries (rows)."""
    n_q, n_g = sim.shape
    k = max(1, min(k, n_g))
    top = torch.topk(sim, k, dim=1).indices.flatten()
    counts = torch.bincount(top, minlength=n_g).double()
    mu, sd = counts.mean(), counts.std(unbiased=False)
    skew = float(((counts - mu) ** 3).mean() / sd**3) if sd > 0 else 0.0
    n_hubs = max(1, int(round(0.01 * n_g)))
    top_share = float(torch.topk(counts, n_hubs).values.sum() / counts.sum())
    return {
        "k": float(k),
        "skewness": skew,
        "top1pct_share": top_share,
        "never_retrieved": float((counts == 0).double().mean()),
        "max_occurrence": float(counts.max()),
    }


def csls(sim: torch.Tensor, k: int = 10) -> torch.Tensor:
    """``2 S - r_a[:, None] - r_b[None, :]``: both directions rank by the same corrected matrix."""
    ka, kb = max(1, min(k, sim.shape[1])), max(1, min(k, sim.shape[0]))
    r_a = torch.topk(sim, ka, dim=1).values.mean(1)  # each a row: mean sim to its k nearest b
    r_b = torch.topk(sim, kb, dim=0).values.mean(0)  # each b column: mean sim to its k nearest a
    return 2 * sim - r_a[:, None] - r_b[None, :]


def qb_norm(sim: torch.Tensor, bank_sim: torch.Tensor, beta: float = 20.0) -> torch.Tensor:
    """Inverted softmax over a query bank: ``beta S[q, g] - logsumexp_bank(beta B[bank, g])``.

    ``sim [n_q, n_g]`` queries against the gallery; ``bank_sim [m, n_g]`` the bank's queries (training
    rows of the query side) against the same gallery. Monotone per query, so ranks are what change.
    """
    return beta * sim - torch.logsumexp(beta * bank_sim, dim=0)[None, :]


def space_diagnostics(za: torch.Tensor, zb: torch.Tensor, sim: torch.Tensor, k: int = 10) -> dict[str, float]:
    """The diagnostics of one shared space on paired test rows, flat for the report."""
    out = {
        "modality_gap": modality_gap(za, zb),
        "alignment": alignment(za, zb),
        "uniformity_a": uniformity(za),
        "uniformity_b": uniformity(zb),
    }
    for name, s in (("a2b", sim), ("b2a", sim.T)):
        for key, v in hubness(s, k).items():
            if key != "k":
                out[f"hubness_{name}_{key}"] = v
    out["hubness_k"] = float(min(k, sim.shape[1]))
    return out
