"""The organisers' autoencoder baseline (DCASE 2023-2026 Task 2), rebuilt for the paper's Table 2.

Facts from docs/reference.md §3 and the organisers' baseline (nttcslab/dcase2023_task2_baseline_ae, v5.1.1); the code is
ours.  Pipeline per machine:

1. features: log-mel of channel 0 (n_fft 1024, hop 512, 128 Slaney mels, power 2, zero-padded centred frames,
   ``10*log10(max(mel, eps))``), 5 consecutive frames stacked -> 640-d vectors, hop 1 frame;
2. AE 640-128-128-128-128-8-128-128-128-128-640, hidden Linear + BatchNorm1d(momentum 0.01, eps 1e-3) + ReLU;
   Adam 1e-3, batch 256, 100 epochs, 10 % of the training vectors held out for validation, MSE loss;
3. scores per test clip: "MSE" (mean squared reconstruction error over the clip) and the selective Mahalanobis
   "MAHALA" (covariances of 128-d residual blocks per domain, quirks kept: per-batch centring, division by the number
   of 640-d vectors minus one, the clip score is the quadratic form of the MEAN residual block, min over domains);
4. decision threshold: gamma distribution fitted to per-batch training scores, its 0.9 quantile.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.stats
import soundfile as sf

from asd_lib import progress
from asd_lib.data import load_clip, scan

N_FFT, HOP, N_MELS, FRAMES, POWER = 1024, 512, 128, 5, 2.0
SAMPLE_RATE = 16000
SCORES = ("MAHALA", "MSE")

log = logging.getLogger(__name__)

#: the paper's Table 2 (AUC / pAUC per machine, Mean, and its Omega), for comparison only
PAPER_TABLE2 = {
    "MAHALA": {"ToyCar": (0.6523, 0.5825), "ToyCarEmu": (0.6806, 0.5347), "bearingEmu": (0.6410, 0.6042),
               "fan": (0.5255, 0.5229), "gearboxEmu": (0.6361, 0.5397), "sliderEmu": (0.5777, 0.5036),
               "valveEmu": (0.5655, 0.5020), "Mean": (0.6112, 0.5414), "Omega": 0.5752},
    "MSE": {"ToyCar": (0.5675, 0.5403), "ToyCarEmu": (0.6541, 0.5589), "bearingEmu": (0.6095, 0.5985),
            "fan": (0.5420, 0.5333), "gearboxEmu": (0.5901, 0.5294), "sliderEmu": (0.5615, 0.5038),
            "valveEmu": (0.6826, 0.5508), "Mean": (0.6153, 0.5450), "Omega": 0.5791},
}


# ----------------------------------------------------------------------------------------------------------------
# features
# ----------------------------------------------------------------------------------------------------------------
def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale (linear below 1 kHz, logarithmic above), as librosa's default."""
    f = np.asarray(f, dtype=float)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-30) / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_hz_to_mel`."""
    m = np.asarray(m, dtype=float)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Slaney-scale, Slaney-area-normalised triangular filters (n_mels, 1 + n_fft//2), float64 (librosa's defaults)."""
    fmax = sr / 2.0 if fmax is None else fmax
    fft_freqs = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]


_FB_CACHE: dict[tuple, np.ndarray] = {}


def log_mel(wave: np.ndarray, sr: int = SAMPLE_RATE, n_fft: int = N_FFT, hop: int = HOP, n_mels: int = N_MELS,
            power: float = POWER) -> np.ndarray:
    """Log-mel (n_mels, n_frames) float64 of a mono wave (T,): hann STFT, centred with zero padding, eps floor."""
    import torch  # heavy: only the functions that run the network or the STFT need it
    key = (sr, n_fft, n_mels)
    if key not in _FB_CACHE:
        _FB_CACHE[key] = mel_filterbank(sr, n_fft, n_mels)
    y = torch.as_tensor(np.asarray(wave, dtype=np.float64))
    spec = torch.stft(y, n_fft, hop, window=torch.hann_window(n_fft, dtype=torch.float64), center=True,
                      pad_mode="constant", return_complex=True).abs() ** power
    mel = _FB_CACHE[key] @ spec.numpy()
    return 20.0 / power * np.log10(np.maximum(mel, sys.float_info.epsilon))


def stack_frames(lm: np.ndarray, frames: int = FRAMES) -> np.ndarray:
    """(n_mels, T) -> (T - frames + 1, n_mels * frames): each row = frames t..t+4, oldest first."""
    n = lm.shape[1] - frames + 1
    if n < 1:
        raise ValueError(f"clip too short: {lm.shape[1]} frames, need at least {frames}")
    return np.concatenate([lm[:, i:i + n] for i in range(frames)], axis=0).T


def wave_to_vectors(wave: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Baseline feature vectors (n_vectors, 640) float32 of one mono wave (T,)."""
    return stack_frames(log_mel(wave, sr)).astype(np.float32)


def file_to_vectors(path: str | os.PathLike, channel: int = 0) -> np.ndarray:
    """Baseline feature vectors (n_vectors, 640) float32 of one WAV file, channel 0 (the near microphone)."""
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if sr != SAMPLE_RATE:
        raise ValueError(f"expected {SAMPLE_RATE} Hz audio, got {sr} Hz: {path}")
    if channel >= x.shape[1]:
        raise ValueError(f"channel {channel} requested, file has {x.shape[1]}: {path}")
    return wave_to_vectors(x[:, channel], sr)


# ----------------------------------------------------------------------------------------------------------------
# the autoencoder
# ----------------------------------------------------------------------------------------------------------------
def build_autoencoder(input_dim: int = N_MELS * FRAMES, hidden: int = 128, bottleneck: int = 8):
    """The baseline AE (torch.nn.Module): forward(x (B, input_dim)) -> reconstruction (B, input_dim)."""
    import torch.nn as nn  # heavy: see log_mel

    def block(i: int, o: int) -> list:
        return [nn.Linear(i, o), nn.BatchNorm1d(o, momentum=0.01, eps=1e-3), nn.ReLU()]

    layers = []
    dims = [input_dim, hidden, hidden, hidden, hidden, bottleneck, hidden, hidden, hidden, hidden]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += block(a, b)
    layers.append(nn.Linear(hidden, input_dim))
    return nn.Sequential(*layers)


def selective_covariance(batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], block_size: int = N_MELS
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(cov_source, cov_target) (block, block) from (x (B, D), recon (B, D), is_target (B,)) training batches.

    The baseline's recipe: residual x - recon cut into block_size rows; per batch and domain centred on that batch's
    domain mean; sum of d^T d over batches, divided by (number of D-d vectors of the domain - 1).  Batches of one
    vector are skipped; with no target vectors the target covariance is the source one.
    """
    acc = {0: np.zeros((block_size, block_size)), 1: np.zeros((block_size, block_size))}
    num = {0: 0, 1: 0}
    for x, recon, is_t in batches:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] <= 1:
            continue
        diff = x - np.asarray(recon, dtype=np.float64)
        is_t = np.asarray(is_t, dtype=bool)
        for dom, sel in ((0, ~is_t), (1, is_t)):
            if not sel.any():
                continue
            rows = diff[sel].reshape(-1, block_size)
            rows = rows - rows.mean(axis=0)
            acc[dom] += rows.T @ rows
            num[dom] += int(sel.sum())
    if num[0] < 2:
        raise ValueError("need at least 2 source-domain training vectors for the covariance")
    cov_s = acc[0] / (num[0] - 1)
    cov_t = acc[1] / (num[1] - 1) if num[1] >= 2 else cov_s.copy()
    return cov_s, cov_t


def inverse_covariances(cov_s: np.ndarray, cov_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 inverses (as the baseline's torch.inverse in float32), returned as float64 arrays."""
    import torch  # heavy: see log_mel
    inv = [torch.inverse(torch.as_tensor(c, dtype=torch.float32)).double().numpy() for c in (cov_s, cov_t)]
    return inv[0], inv[1]


def mahala_score(x: np.ndarray, recon: np.ndarray, inv_cov_s: np.ndarray, inv_cov_t: np.ndarray,
                 block_size: int = N_MELS) -> tuple[float, float, float]:
    """(min, source, target) selective Mahalanobis score of one clip or batch: x, recon (B, D).

    The baseline averages the full matrix Delta S Delta^T over all blocks, i.e. mean(Delta)^T S mean(Delta) with
    Delta the residual blocks (B*D/block, block): the quadratic form of the mean residual block.
    """
    m = (np.asarray(recon, np.float64) - np.asarray(x, np.float64)).reshape(-1, block_size).mean(axis=0)
    s = float(m @ inv_cov_s @ m)
    t = float(m @ inv_cov_t @ m)
    return min(s, t), s, t


def mse_score(x: np.ndarray, recon: np.ndarray) -> float:
    """Mean squared reconstruction error over all elements of a clip: x, recon (B, D)."""
    return float(np.mean((np.asarray(recon, np.float64) - np.asarray(x, np.float64)) ** 2))


def gamma_fit(scores: Sequence[float]) -> tuple[float, float, float]:
    """scipy.stats.gamma.fit (shape, loc, scale) of the calibration scores, as the baseline fits them."""
    a, loc, scale = scipy.stats.gamma.fit(np.asarray(scores, dtype=float))
    return float(a), float(loc), float(scale)


def gamma_threshold(params: tuple[float, float, float], q: float = 0.9) -> float:
    """The q quantile of the fitted gamma distribution (the baseline's decision threshold)."""
    return float(scipy.stats.gamma.ppf(q, params[0], loc=params[1], scale=params[2]))


@dataclass
class TrainedBaseline:
    """One machine's trained AE with its covariances and gamma fits."""
    model: object
    inv_cov_source: np.ndarray
    inv_cov_target: np.ndarray
    cov_source: np.ndarray
    cov_target: np.ndarray
    gamma: dict[str, tuple[float, float, float]]
    threshold: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Reconstruction (B, D) in eval mode."""
        import torch  # heavy: see log_mel
        self.model.eval()
        with torch.no_grad():
            return self.model(torch.as_tensor(x, dtype=torch.float32)).numpy()

    def score_clip(self, vectors: np.ndarray) -> dict[str, float]:
        """{'MAHALA': ..., 'MSE': ...} for one clip's vectors (n, D) (the clip is one batch, as in the baseline)."""
        r = self.reconstruct(vectors)
        return {"MAHALA": mahala_score(vectors, r, self.inv_cov_source, self.inv_cov_target,
                                       self.inv_cov_source.shape[0])[0],
                "MSE": mse_score(vectors, r)}


def train_baseline(vectors: np.ndarray, is_target: np.ndarray, *, epochs: int = 100, batch_size: int = 256,
                   lr: float = 1e-3, validation_split: float = 0.1, seed: int = 0, q: float = 0.9,
                   block_size: int = N_MELS, verbose: bool = False) -> TrainedBaseline:
    """Train the AE on training vectors (N, 640) with domain flags (N,); fit covariances and both gamma thresholds.

    MSE threshold: gamma fit of the last epoch's per-batch training losses plus the validation batch losses;
    MAHALA threshold: gamma fit of per-batch Mahalanobis scores of the training and validation batches.
    """
    import torch  # heavy: see log_mel
    from torch.utils.data import DataLoader, TensorDataset
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = len(vectors)
    perm = rng.permutation(n)
    n_val = int(round(n * validation_split))
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    X = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
    T = torch.as_tensor(np.asarray(is_target, dtype=bool))
    gen = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(TensorDataset(X[tr_idx], T[tr_idx]), batch_size=batch_size, shuffle=True,
                              generator=gen)
    valid_loader = DataLoader(TensorDataset(X[val_idx], T[val_idx]), batch_size=batch_size, shuffle=False)
    model = build_autoencoder(X.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    last_train_losses: list[float] = []
    for ep in range(1, epochs + 1):
        model.train()
        losses = []
        for xb, _ in train_loader:
            if xb.shape[0] <= 1:
                continue
            opt.zero_grad()
            loss = torch.mean((model(xb) - xb) ** 2)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        last_train_losses = losses
        model.eval()
        with torch.no_grad():
            val = [float(torch.mean((model(xb) - xb) ** 2)) for xb, _ in valid_loader]
        history.append({"epoch": ep, "loss": float(np.mean(losses)) if losses else float("nan"),
                        "val_loss": float(np.mean(val)) if val else float("nan")})
        if verbose:
            log.info("epoch %d: loss %.4f val %.4f", ep, history[-1]["loss"], history[-1]["val_loss"])
    mse_calib = last_train_losses + list(val)
    model.eval()

    def batches(loader):
        with torch.no_grad():
            for xb, tb in loader:
                yield xb.numpy(), model(xb).numpy(), tb.numpy()

    cov_s, cov_t = selective_covariance(batches(train_loader), block_size)
    inv_s, inv_t = inverse_covariances(cov_s, cov_t)
    mahala_calib = [mahala_score(x, r, inv_s, inv_t, block_size)[0]
                    for loader in (train_loader, valid_loader) for x, r, _ in batches(loader)]
    gam = {"MSE": _safe_gamma(mse_calib), "MAHALA": _safe_gamma(mahala_calib)}
    thr = {k: gamma_threshold(v, q) for k, v in gam.items()}
    return TrainedBaseline(model, inv_s, inv_t, cov_s, cov_t, gam, thr, history)


def _safe_gamma(scores: list[float]) -> tuple[float, float, float]:
    """Gamma fit; with fewer than 3 distinct values fall back to a degenerate fit at the max (threshold = max)."""
    s = np.asarray(scores, float)
    if len(np.unique(s)) < 3:
        return (1.0, float(s.max()), 1e-12)
    return gamma_fit(s)


# ----------------------------------------------------------------------------------------------------------------
# running it on a dataset and writing submissions
# ----------------------------------------------------------------------------------------------------------------
def _manifest(data: str | os.PathLike | pd.DataFrame, ground_truth=None) -> pd.DataFrame:
    """A scan manifest from a data root (asd_lib.data.scan) or an existing DataFrame."""
    if isinstance(data, pd.DataFrame):
        return data
    return scan(data, ground_truth=ground_truth) if ground_truth is not None else scan(data)


def _clip_vectors(path: str) -> np.ndarray:
    """Channel-0 baseline vectors of one clip, loaded through asd_lib.data.load_clip."""
    wave = load_clip(path, channels=(0,))
    return wave_to_vectors(np.asarray(wave)[0])


def run_baseline(data: str | os.PathLike | pd.DataFrame, machines: Sequence[str] | None, out_dir: str | os.PathLike,
                 *, epochs: int = 100, score: str | Sequence[str] = SCORES, seed: int = 0, batch_size: int = 256,
                 q: float = 0.9, verbose: bool = False) -> dict:
    """Train the baseline per machine and write submissions: ``out_dir/<SCORE>/anomaly_score_*.csv`` + decisions.

    ``data`` is a data root (as asd_lib.data.scan reads it) or a manifest; ``machines`` None = every machine with
    training and test clips.  ``score`` 'MAHALA', 'MSE' or both.  Returns {'dirs': {score: Path}, 'machines': {...
    thresholds, gamma params, timings}}.
    """
    from asd_lib.submission import write_submission  # sklearn (via metrics): only this function writes
    scores = [score] if isinstance(score, str) else list(score)
    for s in scores:
        if s not in SCORES:
            raise ValueError(f"unknown baseline score {s!r}; choose from {SCORES}")
    man = _manifest(data)
    if machines is None:
        machines = sorted(set(man.loc[man["split"] == "train", "machine"]) & set(man.loc[man["split"] == "test",
                                                                                        "machine"]))
    out = Path(out_dir)
    info: dict = {"dirs": {s: out / s for s in scores}, "machines": {}}
    for mi, mach in enumerate(progress.bar(machines, desc="baseline machines")):
        t0 = time.time()
        rows = man[man["machine"] == mach]
        tr = rows[rows["split"] == "train"].sort_values("file_name")
        te = rows[rows["split"] == "test"].sort_values("file_name")
        if tr.empty or te.empty:
            raise ValueError(f"machine {mach!r}: {len(tr)} training and {len(te)} test clips in the manifest")
        feats, flags = [], []
        for p, d in zip(tr["path"], tr["domain"]):
            v = _clip_vectors(p)
            feats.append(v)
            flags.append(np.full(len(v), d == "target" or "target" in os.path.basename(p)))
        X, F = np.concatenate(feats), np.concatenate(flags)
        trained = train_baseline(X, F, epochs=epochs, batch_size=batch_size, seed=seed + mi, q=q, verbose=verbose)
        per = {s: [] for s in SCORES}
        for p in te["path"]:
            sc = trained.score_clip(_clip_vectors(p))
            for s in SCORES:
                per[s].append(sc[s])
        names = [os.path.basename(p) for p in te["path"]]
        sections = sorted(set(te["section"].astype(str)))
        for s in scores:
            arr = np.array(per[s])
            dec = (arr > trained.threshold[s]).astype(int)
            for sec in sections:
                sel = (te["section"].astype(str) == sec).to_numpy()
                write_submission(out / s, mach, [n for n, k in zip(names, sel) if k], arr[sel], dec[sel], section=sec)
        info["machines"][mach] = {"n_train_vectors": int(len(X)), "threshold": trained.threshold,
                                  "gamma": trained.gamma, "final_loss": trained.history[-1] if trained.history else
                                  None, "history": trained.history, "seconds": time.time() - t0}
        if verbose:
            log.info("[%d/%d] %s: %d vectors, %.1f s", mi + 1, len(machines), mach, len(X), time.time() - t0)
    return info


def table2(results: dict[str, "object"], machines: Sequence[str] | None = None) -> pd.DataFrame:
    """The paper's Table 2 layout from evaluation results {score name: EvaluationResult}.

    Rows: machines, 'Mean', then three single numbers in the AUC column: 'official score' (21-number harmonic mean
    with eps floor), 'hmean14 of these rows' (the 14-number harmonic mean of this table's AUC and pAUC rows, how
    docs/reference.md §8 re-derives the paper's Table 2 Omega; NOT official) and 'paper-style Omega (AAU metric)' (domain-only
    AUCs, :func:`asd_lib.metrics.paper_style_scores`; NOT official).  Per-machine AUC is the mean of the official
    AUC (source) and AUC (target) (the baseline's "arithmetic mean" row).
    """
    from asd_lib.metrics import paper_style_scores  # sklearn: only the evaluating functions need it
    cols, data = [], {}
    for name, res in results.items():
        t = res.table
        ms = list(dict.fromkeys(t["machine"])) if machines is None else list(machines)
        auc = [float(np.mean([t.loc[t.machine == m, "AUC (source)"].mean(), t.loc[t.machine == m, "AUC (target)"]
                              .mean()])) for m in ms]
        pa = [float(t.loc[t.machine == m, "pAUC"].mean()) for m in ms]
        vals_auc = auc + [float(np.mean(auc)), res.official_score, float(scipy.stats.hmean(auc + pa)),
                          paper_style_scores(res)["omega_hmean14"]]
        vals_pauc = pa + [float(np.mean(pa)), np.nan, np.nan, np.nan]
        data[(name, "AUC")] = vals_auc
        data[(name, "pAUC")] = vals_pauc
        cols += [(name, "AUC"), (name, "pAUC")]
        index = ms + ["Mean", "official score", "hmean14 of these rows (NOT official)",
                      "paper-style Omega (AAU metric, NOT official)"]
    df = pd.DataFrame(data, index=index)
    df.columns = pd.MultiIndex.from_tuples(cols)
    return df


def evaluate_baseline(out_dir: str | os.PathLike, ground_truth: str | os.PathLike | None = None,
                      scores: Sequence[str] = SCORES) -> tuple[pd.DataFrame, dict]:
    """Evaluate run_baseline's submissions; returns (Table 2 DataFrame, {score: EvaluationResult})."""
    from asd_lib.metrics import evaluate_submission  # sklearn: see table2
    res = {s: evaluate_submission(Path(out_dir) / s, ground_truth, ci=False) for s in scores}
    return table2(res), res
