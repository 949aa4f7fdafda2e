"""``AEScorer`` (notebook 03c): the authors' spectral-norm autoencoder, reconstruction MSE; ``train_autoencoders``
trains many at once as one batched model (same maths, stacked weights and torch.bmm).

The network and its training live in ``asd_lib.scorers.ae_network``, which imports torch: it is imported inside the
functions that train or run an autoencoder, so that ``from asd_lib import scorers`` stays light.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from asd_lib.scorers.checks import check_2d, check_dim


STACK_BYTES_CPU = 4 * 2**20
"""On the CPU a stack holds as many autoencoders as fit their weights, gradients and AdamW moments (16 bytes a
parameter) in this many bytes, so that a training step works within the caches. Larger stacks are slower there
(``benchmarks/bench_ae_stacks.py``, 2 threads, 42 autoencoders): at the DCASE shape (768-d, 616 k parameters,
1,000 clips each) one stack of 42 took 9.1 s an epoch and one at a time 5.1 s; at the demo's 96-d (17 k
parameters, 100 clips each) stacks of 14 took 0.041 s, one stack of 42 0.102 s and one at a time 0.266 s."""


def models_per_stack(n_params: int, device: str) -> int:
    """How many autoencoders of ``n_params`` parameters ``train_autoencoders`` stacks on ``device``: on CUDA up to
    64 (the GPU wants large batched matmuls), on the CPU as many as ``STACK_BYTES_CPU`` holds, at least one."""
    if not str(device).startswith("cpu"):
        return 64
    return max(1, min(64, STACK_BYTES_CPU // (16 * n_params)))


def train_autoencoders(
    datasets: Sequence[np.ndarray],
    *,
    bottleneck: int = 32,
    hidden: int | None = None,
    max_epochs: int = 50,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    patience: int = 5,
    min_delta: float = 1e-6,
    seeds: int | Sequence[int] = 42,
    device: str = "cpu",
    max_models_per_batch: int | None = None,
) -> list[dict[str, Any]]:
    """Train one authors'-style AE per dataset (each (n_i, D)), stacking same-shaped ones into one batched model
    (``asd_lib.scorers.ae_network.StackedAutoencoder``, at most ``max_models_per_batch`` per stack; None: as many
    as ``models_per_stack`` allows).

    The recipe and why stacked models stay independent: ``asd_lib.scorers.ae_network``. Returns, per dataset, a dict
    with 'params' (numpy arrays with a leading axis of 1), 'n_epochs' and 'loss_curve'.
    """
    from asd_lib.scorers.ae_network import n_parameters, train_group  # torch: imported when an AE trains

    if isinstance(seeds, (int, np.integer)):
        seeds = [int(seeds)] * len(datasets)
    if len(seeds) != len(datasets):
        raise ValueError(f"train_autoencoders: {len(seeds)} seeds for {len(datasets)} datasets")
    arrays = [check_2d(X, f"train_autoencoders dataset {i}", dtype=np.float32) for i, X in enumerate(datasets)]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, X in enumerate(arrays):
        groups.setdefault(X.shape, []).append(i)
    results: list[dict[str, Any] | None] = [None] * len(arrays)
    for (n, D), members in groups.items():
        per_stack = max_models_per_batch or models_per_stack(n_parameters(D, hidden, bottleneck), device)
        for s in range(0, len(members), per_stack):
            idx = members[s : s + per_stack]
            res = train_group([arrays[i] for i in idx], [int(seeds[i]) for i in idx], bottleneck=bottleneck,
                              hidden=hidden, max_epochs=max_epochs, batch_size=batch_size, lr=lr,
                              weight_decay=weight_decay, patience=patience, min_delta=min_delta, device=device)
            for i, r in zip(idx, res):
                results[i] = r
    return results  # type: ignore[return-value]


class AEScorer(BaseEstimator):
    """The authors' spectral-norm autoencoder; score = per-clip reconstruction MSE (float32 torch, CPU or CUDA)."""

    def __init__(self, bottleneck: int = 32, hidden: int | None = None, max_epochs: int = 50, batch_size: int = 64,
                 lr: float = 1e-3, weight_decay: float = 1e-5, patience: int = 5, min_delta: float = 1e-6,
                 seed: int = 42, device: str = "cpu"):
        self.bottleneck = bottleneck
        self.hidden = hidden
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.min_delta = min_delta
        self.seed = seed
        self.device = device

    def _train_kwargs(self) -> dict[str, Any]:
        return dict(bottleneck=self.bottleneck, hidden=self.hidden, max_epochs=self.max_epochs,
                    batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay, patience=self.patience,
                    min_delta=self.min_delta, device=self.device)

    def fit(self, X, y=None, domains=None):
        """Train on X (n, D); domains are ignored."""
        X = check_2d(X, "AEScorer.fit")
        (res,) = train_autoencoders([X], seeds=self.seed, **self._train_kwargs())
        return self._set_fitted(res, X.shape[1])

    def _set_fitted(self, res: Mapping[str, Any], dim: int) -> "AEScorer":
        self.params_ = res["params"]
        self.n_epochs_ = res["n_epochs"]
        self.loss_curve_ = list(res["loss_curve"])
        self.n_features_in_ = dim
        return self

    def decision_function(self, X) -> np.ndarray:
        """(n, D) -> (n,) reconstruction MSE."""
        check_is_fitted(self, "params_")
        X = check_2d(X, "AEScorer.decision_function")
        check_dim(self, X)
        from asd_lib.scorers.ae_network import reconstruction_mse  # torch

        return reconstruction_mse(self.params_, X, self.device)
