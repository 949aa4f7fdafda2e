"""Seconds per epoch of the scorer autoencoders against the number trained as one stack, the measurement behind
``asd_lib.scorers.autoencoder.STACK_BYTES_CPU``.

    python benchmarks/bench_ae_stacks.py [--threads 2] [--models 42] [--dim 768] [--n 1000] [--epochs 2]
                                         [--stacks 42,6,3,1]

Trains ``--models`` autoencoders of the library's recipe (``AEScorer``'s settings through ``train_group``)
on random (n, D) data, ``--stacks`` models at a time, for ``--epochs`` epochs without early stopping, and prints
the seconds per epoch of each stack size, and the stack size ``models_per_stack`` picks for this shape. The DCASE
shape is the default; the demo's is ``--dim 96 --n 100 --epochs 20 --stacks 42,14,6,1``.
"""
from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", type=int, default=42, help="autoencoders in all (the DCASE stage trains 42)")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--n", type=int, default=1000, help="training clips per autoencoder")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--stacks", default="42,6,3,1", help="comma-separated stack sizes to time")
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    import numpy as np
    import torch

    from asd_lib.scorers import AEScorer, models_per_stack
    from asd_lib.scorers.ae_network import n_parameters, train_group

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((args.n, args.dim)).astype(np.float32) for _ in range(args.models)]
    ae = AEScorer(max_epochs=args.epochs, patience=args.epochs + 1, device="cpu")  # the library's recipe, no stop
    kw = ae._train_kwargs()
    P = n_parameters(args.dim, ae.hidden, ae.bottleneck)
    print(f"{args.models} autoencoders of {P:,} parameters ({args.dim}-d), {args.n} clips each, {args.threads} "
          f"threads; models_per_stack picks {models_per_stack(P, 'cpu')} on the CPU")
    for size in (int(x) for x in args.stacks.split(",")):
        t = time.perf_counter()
        for s in range(0, args.models, size):
            train_group(data[s: s + size], list(range(s, min(s + size, args.models))), **kw)
        dt = time.perf_counter() - t
        print(f"  stacks of {size:3d}: {dt / args.epochs:7.3f} s per epoch", flush=True)


if __name__ == "__main__":
    main()
