"""The authors' scorer autoencoder as a torch module, several trained at once as one stacked module.

Network and recipe (docs/reference.md §6): D -> H -> bottleneck -> H -> D with H = max(D // 2, 2 * bottleneck),
LeakyReLU(0.1) after the first and the third layer, spectral norm on the first three Linear layers (one power
iteration per training forward, as ``torch.nn.utils.spectral_norm``), MSE loss, ``torch.optim.AdamW``, batch 64,
seeded initialisation and shuffling (the same random draws as the authors' ``nn.Linear`` + ``DataLoader``), early
stop when the epoch-mean training loss has not improved by ``min_delta`` for ``patience`` epochs.

``StackedAutoencoder`` holds B independent autoencoders of one shape: every weight is a (B, out, in) parameter and
one batched matmul runs them all, which is how ``asd_lib.scorers.score_embeddings`` trains every (model, machine,
calibration split) autoencoder of a stage together. The models stay independent: the loss is a sum of per-model
means, AdamW is element-wise, and a model that stops early leaves the stack (``select``) with its optimiser state.
With B = 1 the arithmetic is op for op that of the authors' torch modules (a test checks bit equality).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from asd_lib import progress

LAYERS = ("enc1", "enc2", "dec1", "dec2")  # spectral norm on the first three (authors' network)


def hidden_width(D: int, hidden: int | None, bottleneck: int) -> int:
    """H of the authors' network: ``hidden`` when given, else max(D // 2, 2 * bottleneck)."""
    return hidden if hidden is not None else max(D // 2, 2 * bottleneck)


def n_parameters(D: int, hidden: int | None, bottleneck: int) -> int:
    """Weights and biases of one autoencoder D -> H -> bottleneck -> H -> D."""
    H = hidden_width(D, hidden, bottleneck)
    return (D * H + H) + (H * bottleneck + bottleneck) + (bottleneck * H + H) + (H * D + D)


def initial_state(D: int, hidden: int, bottleneck: int, seed: int) -> dict[str, np.ndarray]:
    """Initial weights drawn exactly as torch.nn.Linear + torch.nn.utils.spectral_norm would after manual_seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state: dict[str, np.ndarray] = {}
        dims = [(D, hidden), (hidden, bottleneck), (bottleneck, hidden), (hidden, D)]
        for name, (i, o) in zip(LAYERS, dims):
            lin = nn.Linear(i, o)
            state[name + ".weight"] = lin.weight.detach().numpy().copy()
            state[name + ".bias"] = lin.bias.detach().numpy().copy()
            if name != "dec2":  # same draws as spectral_norm's registration: u ~ N(0,1)^out, v ~ N(0,1)^in
                u = F.normalize(lin.weight.new_empty(o).normal_(0, 1), dim=0, eps=1e-12)
                v = F.normalize(lin.weight.new_empty(i).normal_(0, 1), dim=0, eps=1e-12)
                state[name + ".u"] = u.numpy().copy()
                state[name + ".v"] = v.numpy().copy()
    return state


class StackedLinear(nn.Module):
    """B independent Linear layers, weight (B, out, in) and bias (B, out), optionally spectral-normalised (vectors
    u (B, out), v (B, in) as buffers; a training forward runs one power iteration first)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, u: torch.Tensor | None = None,
                 v: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)
        self.spectral = u is not None
        if self.spectral:
            self.register_buffer("u", u)
            self.register_buffer("v", v)

    def effective_weight(self) -> torch.Tensor:
        """The weight the layer applies: W / sigma(W) with spectral norm, else W."""
        W = self.weight
        if not self.spectral:
            return W
        u, v, B = self.u, self.v, W.shape[0]
        if self.training:
            with torch.no_grad():
                if B == 1:
                    v[0] = F.normalize(torch.mv(W[0].t(), u[0]), dim=0, eps=1e-12)
                    u[0] = F.normalize(torch.mv(W[0], v[0]), dim=0, eps=1e-12)
                else:
                    v.copy_(F.normalize(torch.bmm(W.transpose(1, 2), u.unsqueeze(2)).squeeze(2), dim=1, eps=1e-12))
                    u.copy_(F.normalize(torch.bmm(W, v.unsqueeze(2)).squeeze(2), dim=1, eps=1e-12))
        uc, vc = u.clone(), v.clone()
        if B == 1:  # a view of W, not W[0]: the same values, and autograd skips select's zero-filled gradient
            sigma = torch.dot(uc[0], torch.mv(W.view(W.shape[1:]), vc[0])).reshape(1)
        else:
            sigma = (uc * torch.bmm(W, vc.unsqueeze(2)).squeeze(2)).sum(dim=1)
        return W / sigma.view(B, 1, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h (B, n, in) -> (B, n, out)."""
        W = self.effective_weight()
        if W.shape[0] == 1:
            return F.linear(h[0], W.view(W.shape[1:]), self.bias.view(-1)).unsqueeze(0)
        return torch.baddbmm(self.bias.unsqueeze(1), h, W.transpose(1, 2))


class StackedAutoencoder(nn.Module):
    """B autoencoders of the authors' shape as one module; ``forward`` maps x (B, n, D) to its reconstruction."""

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__()
        t = {k: torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for k, v in state.items()}
        self.layers = nn.ModuleDict({name: StackedLinear(t[f"{name}.weight"], t[f"{name}.bias"], t.get(f"{name}.u"),
                                                         t.get(f"{name}.v")) for name in LAYERS})

    @classmethod
    def initial(cls, D: int, hidden: int, bottleneck: int, seeds: Sequence[int]) -> "StackedAutoencoder":
        """A stack of freshly initialised autoencoders, one per seed."""
        inits = [initial_state(D, hidden, bottleneck, s) for s in seeds]
        return cls({k: np.stack([st[k] for st in inits]) for k in inits[0]})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for name, layer in self.layers.items():
            h = layer(h)
            if name in ("enc1", "dec1"):
                h = F.leaky_relu(h, 0.1)
        return h

    def state(self, row: int) -> dict[str, np.ndarray]:
        """One model's weights and spectral-norm vectors as numpy arrays with a leading axis of 1."""
        return {f"{name}.{k}": v.detach()[row: row + 1].cpu().numpy().copy()
                for name, layer in self.layers.items() for k, v in (*layer.named_parameters(), *layer.named_buffers())}

    def select(self, rows: torch.Tensor) -> "StackedAutoencoder":
        """A new stack holding only ``rows`` (copies), on the same device."""
        return StackedAutoencoder({f"{name}.{k}": v.detach()[rows].clone() for name, layer in self.layers.items()
                                   for k, v in (*layer.named_parameters(), *layer.named_buffers())})


def reconstruction_mse(state: dict[str, Any], X: np.ndarray, device: str = "cpu", chunk: int = 4096) -> np.ndarray:
    """Per-clip reconstruction MSE (n,) of one trained autoencoder (``state``: arrays with a leading axis of 1)."""
    model = StackedAutoencoder(state).to(device).eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(X), chunk):
            x = torch.as_tensor(X[s: s + chunk], dtype=torch.float32, device=device).unsqueeze(0)
            out.append(((x - model(x)) ** 2).mean(dim=2)[0].double().cpu().numpy())
    return np.concatenate(out)


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # foreach=False: the per-tensor arithmetic of the authors' run (bit-equal with B = 1)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=False)


def train_group(arrays: Sequence[np.ndarray], seeds: Sequence[int], *, bottleneck: int, hidden: int | None,
                max_epochs: int, batch_size: int, lr: float, weight_decay: float, patience: int, min_delta: float,
                device: str) -> list[dict[str, Any]]:
    """Train same-shaped autoencoders (one per array, each (n, D) float32) as one stack; per model a dict with
    'params' (``StackedAutoencoder.state``), 'n_epochs' and 'loss_curve'."""
    B = len(arrays)
    n, D = arrays[0].shape
    H = hidden_width(D, hidden, bottleneck)
    model = StackedAutoencoder.initial(D, H, bottleneck, seeds).to(device).train()
    opt = _optimizer(model, lr, weight_decay)
    X = torch.as_tensor(np.stack(arrays), dtype=torch.float32, device=device)  # (B, n, D)
    gens = [torch.Generator().manual_seed(int(sd)) for sd in seeds]
    alive = np.arange(B)  # original index of each row of the stack
    best = np.full(B, np.inf)
    stale = np.zeros(B, dtype=int)
    curves: list[list[float]] = [[] for _ in range(B)]
    out: list[dict[str, Any] | None] = [None] * B
    for epoch in progress.bar(range(max_epochs), desc=f"autoencoders x{B}"):
        # the same generator draws as DataLoader(shuffle=True, generator=g): base seed, permutation, empty tail
        perms = []
        for b in alive:
            torch.empty((), dtype=torch.int64).random_(generator=gens[b])
            perms.append(torch.randperm(n, generator=gens[b]))
            torch.randperm(n, generator=gens[b])
        perm = torch.stack(perms).to(device)
        rows = torch.arange(len(alive), device=device).unsqueeze(1)
        sums = np.zeros(len(alive))
        n_batches = 0
        for s in range(0, n, batch_size):
            xb = X[rows, perm[:, s: s + batch_size]]  # (B_alive, b, D)
            opt.zero_grad(set_to_none=True)
            rec = model(xb)
            if len(alive) == 1:
                losses = F.mse_loss(rec[0], xb[0]).reshape(1)
            else:
                losses = F.mse_loss(rec, xb, reduction="none").mean(dim=(1, 2))
            losses.sum().backward()
            opt.step()
            sums += losses.detach().double().cpu().numpy()
            n_batches += 1
        avg = sums / n_batches
        stop = np.zeros(len(alive), dtype=bool)
        for r, b in enumerate(alive):
            curves[b].append(float(avg[r]))
            if avg[r] < best[b] - min_delta:
                best[b], stale[b] = avg[r], 0
            else:
                stale[b] += 1
                stop[r] = stale[b] >= patience
        if epoch == max_epochs - 1:
            stop[:] = True
        for r in np.flatnonzero(stop):
            out[int(alive[r])] = {"params": model.state(int(r)), "n_epochs": epoch + 1, "loss_curve": curves[alive[r]]}
        if stop.all():
            break
        if stop.any():  # the stopped models leave the stack, the others keep their optimiser state
            keep = torch.as_tensor(np.flatnonzero(~stop), device=device)
            smaller = model.select(keep).train()
            new_opt = _optimizer(smaller, lr, weight_decay)
            for old, new in zip(model.parameters(), smaller.parameters()):
                st = opt.state[old]
                new_opt.state[new] = {"step": st["step"].clone(), "exp_avg": st["exp_avg"][keep].clone(),
                                      "exp_avg_sq": st["exp_avg_sq"][keep].clone()}
            model, opt, X, alive = smaller, new_opt, X[keep], alive[~stop]
    return out  # type: ignore[return-value]
