"""The structural probe (Hewitt & Manning 2019): is the parse tree a linear map away?

Learn B (k, H) so that squared distances after the map match distances in the dependency tree:

    p_ij = ||B (h_i - h_j)||^2   ~   t_ij = number of edges between words i and j
    loss = sum over sentences s of  1/|s|^2  sum_{i,j in s} |p_ij - t_ij|

Gradient, with a_i = B h_i (k,) and g_ij = sign(p_ij - t_ij) / |s|^2 (symmetric in i, j):
    dp_ij/dB = 2 (a_i - a_j)(h_i - h_j)^T
    dL/dB = sum_ij g_ij 2 (a_i - a_j)(h_i - h_j)^T = 4 A^T (diag(r) - G) X,   r_i = sum_j g_ij
(the sum over pairs of a symmetric weight is a graph Laplacian), so no (W, W, k) array is needed.

Evaluation on held-out sentences:
  * spearman: for each word, the Spearman correlation between its predicted and true distances to the
    other words, averaged over the words of sentences with at least 5 words;
  * uuas: undirected unlabelled attachment score of the minimum spanning tree of the predicted
    distances (punctuation left out, as Hewitt & Manning do), against the *linear chain* baseline
    that links every word to the next.
"""
from __future__ import annotations

import numpy as np

from minibert.finetuning.metrics import spearman
from minibert.optim import AdamW


def tree_distances(heads) -> np.ndarray:
    """(W, W) path lengths in the tree given by 1-based heads (0 = root)."""
    W = len(heads)
    adj = [[] for _ in range(W)]
    for i, h in enumerate(heads):
        if h:
            if not 1 <= h <= W:
                raise ValueError(f"head {h} of word {i} is outside 1..{W}")
            adj[i].append(h - 1)
            adj[h - 1].append(i)
    dist = np.full((W, W), -1, dtype=np.int64)
    for s in range(W):
        dist[s, s] = 0
        frontier = [s]
        while frontier:
            nxt = []
            for u in frontier:
                for v in adj[u]:
                    if dist[s, v] < 0:
                        dist[s, v] = dist[s, u] + 1
                        nxt.append(v)
            frontier = nxt
    if (dist < 0).any():
        raise ValueError(f"heads {heads} do not form one tree")
    return dist


def pair_loss_and_grad(B, X, T, mask):
    """Loss and dL/dB for a padded batch. X (S, W, H), T (S, W, W) tree distances, mask (S, W) 1 for real
    words; B (k, H). Returns (loss summed over sentences, dB (k, H))."""
    # einsum rather than matmul for the products summed over the batch's words: OpenBLAS sends a
    # (k, S*W) @ (S*W, H) product to several threads, which costs 100x more when a core is busy.
    S, W, H = X.shape
    A = (X.reshape(S * W, H) @ B.T).reshape(S, W, -1)                    # (S, W, k)
    sq = (A * A).sum(-1)                                                 # (S, W)
    P = sq[:, :, None] + sq[:, None, :] - 2 * np.einsum("swk,svk->swv", A, A)   # (S, W, W) predicted squared distances
    m2 = mask[:, :, None] * mask[:, None, :]
    n = mask.sum(1)                                                      # (S,)
    scale = (1.0 / np.maximum(n, 1) ** 2)[:, None, None]
    loss = float((np.abs(P - T) * m2 * scale).sum())
    G = np.sign(P - T) * m2 * scale                                      # (S, W, W), symmetric
    lap = -G
    idx = np.arange(G.shape[1])
    lap[:, idx, idx] += G.sum(-1)                                        # diag(r) - G
    LX = np.einsum("swv,svh->swh", lap, X)                               # (S, W, H)
    dB = 4 * np.einsum("nk,nh->kh", A.reshape(-1, A.shape[-1]), LX.reshape(-1, H))   # (k, H)
    return loss, dB


def _pad(features, dists):
    S, Wm, H = len(features), max(len(f) for f in features), features[0].shape[1]
    X = np.zeros((S, Wm, H), np.float64)
    T = np.zeros((S, Wm, Wm), np.float64)
    mask = np.zeros((S, Wm), np.float64)
    for s, (f, d) in enumerate(zip(features, dists)):
        X[s, :len(f)] = f
        T[s, :len(f), :len(f)] = d
        mask[s, :len(f)] = 1
    return X, T, mask


def fit_structural_probe(features, dists, rng: np.random.Generator, rank: int = 64, steps: int = 400,
                         batch_size: int = 32, lr: float = 1e-2):
    """Learn B (rank, H) by AdamW on the loss above. features: list of (W_s, H) word vectors; dists: list
    of (W_s, W_s) tree distances. Returns (B, mean, std) -- the features are standardised with the
    training statistics (an invertible diagonal map that B could absorb, kept for the optimiser)."""
    allx = np.concatenate(features)
    mean, std = allx.mean(0), allx.std(0)
    std = np.where(std > 1e-6, std, 1.0)
    feats = [(f - mean) / std for f in features]
    H = allx.shape[1]
    B = rng.standard_normal((rank, H)) / np.sqrt(H)
    dB = np.zeros_like(B)
    opt = AdamW([("B", B, dB)], lr=lr, weight_decay=0.0, eps=1e-8)
    for _ in range(steps):
        idx = rng.choice(len(feats), min(batch_size, len(feats)), replace=False)
        X, T, mask = _pad([feats[i] for i in idx], [dists[i] for i in idx])
        _, g = pair_loss_and_grad(B, X, T, mask)
        dB[...] = g / len(idx)
        opt.step()
    return B, mean, std


def predicted_distances(B, mean, std, x) -> np.ndarray:
    """(W, W) squared distances ||B (h_i - h_j)||^2 for one sentence's word vectors x (W, H)."""
    a = ((x - mean) / std) @ B.T
    sq = (a * a).sum(-1)
    return sq[:, None] + sq[None, :] - 2 * a @ a.T


def minimum_spanning_tree(D) -> set:
    """Prim's algorithm on a dense (W, W) distance matrix; returns the edges as sorted pairs."""
    W = len(D)
    if W < 2:
        return set()
    inside = np.zeros(W, bool)
    inside[0] = True
    best = D[0].astype(float).copy()
    parent = np.zeros(W, int)
    edges = set()
    for _ in range(W - 1):
        cand = np.where(inside, np.inf, best)
        j = int(np.argmin(cand))
        edges.add((min(j, parent[j]), max(j, parent[j])))
        inside[j] = True
        closer = D[j] < best
        parent[closer & ~inside] = j
        best = np.minimum(best, D[j])
    return edges


def gold_edges(heads, keep) -> set:
    """Undirected edges between kept words (punctuation removed)."""
    return {(min(i, h - 1), max(i, h - 1)) for i, h in enumerate(heads) if h and keep[i] and keep[h - 1]}


def evaluate_structural_probe(B, mean, std, features, heads_list, upos_list) -> dict:
    """spearman and uuas on held-out sentences, and the linear-chain UUAS baseline."""
    rhos, hit, total, chain_hit = [], 0, 0, 0
    for x, heads, upos in zip(features, heads_list, upos_list):
        D = predicted_distances(B, mean, std, x)
        T = tree_distances(heads)
        if len(heads) >= 5:
            rhos += [spearman(np.delete(D[i], i), np.delete(T[i], i)) for i in range(len(heads))]
        keep = np.array([u != "PUNCT" for u in upos])
        words = np.flatnonzero(keep)
        if len(words) < 2:
            continue
        new = {int(w): n for n, w in enumerate(words)}                  # index among the kept words
        gold = {(new[a], new[b]) for a, b in gold_edges(heads, keep)}
        pred = minimum_spanning_tree(D[np.ix_(words, words)])
        chain = {(i, i + 1) for i in range(len(words) - 1)}
        hit += len(pred & gold)
        chain_hit += len(chain & gold)
        total += len(gold)
    return {"spearman": float(np.mean(rhos)) if rhos else None, "uuas": hit / max(total, 1),
            "linear_chain_uuas": chain_hit / max(total, 1)}


def structural_probe_layers(word_vectors, rows, rng: np.random.Generator, rank: int = 64, steps: int = 400) -> dict:
    """Fit and evaluate one structural probe per layer. word_vectors: per sentence (L+1, W, H) (from
    ``representations.word_features``); rows: the annotated sentences (``heads``, ``upos``, ``split``).
    Returns lists over layers of ``spearman`` and ``uuas``, and the ``linear_chain_uuas`` baseline."""
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    test = [i for i, r in enumerate(rows) if r["split"] != "train"]
    if not train or not test:
        raise ValueError("the structural probe needs training and test sentences")
    dists = [tree_distances(r["heads"]) for r in rows]
    out = {"spearman": [], "uuas": []}
    for layer in range(word_vectors[0].shape[0]):
        B, mean, std = fit_structural_probe([word_vectors[i][layer].astype(np.float64) for i in train],
                                            [dists[i] for i in train], rng, rank, steps)
        res = evaluate_structural_probe(B, mean, std, [word_vectors[i][layer] for i in test],
                                        [rows[i]["heads"] for i in test], [rows[i]["upos"] for i in test])
        out["spearman"].append(res["spearman"])
        out["uuas"].append(res["uuas"])
        out["linear_chain_uuas"] = res["linear_chain_uuas"]
    return out
