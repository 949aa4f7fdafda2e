"""Fine-tuning and extraction speed on CPU, printed beside the demo budget (docs/design.md: four systems in 15 minutes).

    python benchmarks/bench_finetune.py [--data DIR_OF_SMALL_PRESET] [--threads 2] [--skip-base]

Measures, for the tiny backbones on the `small` preset (2 s clips): fbank caching (dev train clips, both channels),
fine-tuning samples/s (one epoch on two machines, cached fbank, the demo's batch 32 x 1), embedding extraction
clips/s (ch0, GeM, whole clips). Then a few steps of the base shapes (BEATs / SSLAM ViT-B) at 2 s and 10 s.
The estimate multiplies the measured rates by the demo's work: DEV (BEATs to epoch 4 + SSLAM to epoch 2 on 7
machines, 3 embedding sets) and DEV+ADD (the same on 12 machines, 2 embedding sets), as params/demo.yaml sets them.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BUDGET_S = 15 * 60  # docs/design.md: `make demo`, all four systems


def _small_data(path: str | None) -> Path:
    if path:
        return Path(path)
    out = Path(tempfile.gettempdir()) / "asd_bench_small_seed0"
    if not (out / "summary.json").exists():
        from asd_lib.synth import generate

        t = time.perf_counter()
        generate(out, preset="small", seed=0)
        print(f"generated the small preset in {time.perf_counter() - t:.1f} s -> {out}")
    return out


def bench_tiny(data: Path, work: Path) -> dict[str, dict[str, float]]:
    """Caching, training and extraction rates of beats-tiny and sslam-tiny (aau recipe) on the small preset."""
    import pandas as pd

    from asd_lib.backbones import load_backbone
    from asd_lib.data import scan
    from asd_lib.embed import embed_paths
    from asd_lib import logs
    from asd_lib.finetune import cache_fbank, finetune

    logs.configure()  # fine-tuning's epoch lines
    man = scan(data)
    dev = man[man["set"] == "dev"]
    train = dev[dev["split"] == "train"].sort_values(["machine", "file_name"])
    two = sorted(train["machine"].unique())[:2]
    out: dict[str, dict[str, float]] = {}
    for name, recipe in (("beats-tiny", None), ("sslam-tiny", "aau")):
        enc = load_backbone(name, recipe=recipe)
        t, c = time.perf_counter(), time.process_time()
        cache_fbank(train, enc, work / name / "fbank" / enc.recipe, 2.0, (0, 1), progress=False)
        cache_s, cache_cpu = time.perf_counter() - t, time.process_time() - c
        n_cache = 2 * len(train)
        n = 2 * len(train[train["machine"].isin(two)])
        t, c = time.perf_counter(), time.process_time()
        # same out_dir layout as the cache above: the run reuses it, so this times training only
        ck = finetune(dev, name, work / name, recipe=recipe, machines=two, epochs=1, batch_size=32, duration=2.0,
                      warmup_epochs=1.0, amp=False, keep_epochs=[1], progress=False, verbose=False,
                      backbone_id=name.split("-")[0])
        train_s, train_cpu = time.perf_counter() - t, time.process_time() - c
        epoch_s = float(pd.read_csv(ck / "log.csv")["seconds"].iloc[0])
        test = dev[(dev["split"] == "test") & dev["machine"].isin(two[:1])]
        t, c = time.perf_counter(), time.process_time()
        embed_paths(enc, test["path"].tolist(), "ch0", "gem", None, batch_size=16, device="cpu", progress=False)
        ext_s, ext_cpu = time.perf_counter() - t, time.process_time() - c
        out[name] = {"cache_rate": n_cache / cache_s, "train_rate": n / epoch_s, "extract_rate": len(test) / ext_s,
                     "cache_cpu": cache_cpu / n_cache, "train_cpu": train_cpu / n, "extract_cpu": ext_cpu / len(test)}
        r = out[name]
        print(f"{name:11s} wall: fbank cache {r['cache_rate']:6.1f} ch-clips/s ({cache_s:.1f} s for {n_cache}) | "
              f"fine-tune {r['train_rate']:6.1f} samples/s (epoch of {n}: {epoch_s:.1f} s) | "
              f"extraction {r['extract_rate']:6.1f} clips/s")
        print(f"{'':11s} CPU-ms per item: cache {1e3 * r['cache_cpu']:.1f}, fine-tune {1e3 * r['train_cpu']:.1f} "
              f"(incl. start-up), extraction {1e3 * r['extract_cpu']:.1f}")
    return out


def demo_estimate(rates: dict[str, dict[str, float]], threads: int) -> None:
    """Estimated demo seconds for caching + fine-tuning + extraction, beside the 15-minute budget.

    Two estimates: from the wall-clock rates measured here (include whatever else loads the machine), and from
    CPU time divided by ``threads`` (what an otherwise idle machine with that many cores would take)."""
    clips = {"dev_train": 7 * 104, "devadd_train": 12 * 104, "dev_test": 7 * 120, "eval_test": 5 * 120}
    epochs = {"beats-tiny": 4, "sslam-tiny": 2}  # demo epoch_scale 0.02: beats@204 -> 4, sslam@100 -> 2
    totals = {"wall": 0.0, "cpu": 0.0}
    print(f"\ndemo estimate (small preset; seconds from wall rates | from CPU time / {threads} cores):")
    plan = (("dev", clips["dev_train"], clips["dev_test"], {"beats-tiny": 2, "sslam-tiny": 1}),
            ("devadd", clips["devadd_train"], clips["dev_test"] + clips["eval_test"], {"beats-tiny": 1,
                                                                                      "sslam-tiny": 1}))
    for regime, n_train, n_test, sets in plan:
        for name, r in rates.items():
            work = {"cache": 2 * n_train, "train": epochs[name] * 2 * n_train, "extract": sets[name] * (n_train
                                                                                                      + n_test)}
            wall = {k: work[k] / r[f"{k}_rate"] for k in work}
            cpu = {k: work[k] * r[f"{k}_cpu"] / threads for k in work}
            totals["wall"] += sum(wall.values())
            totals["cpu"] += sum(cpu.values())
            print(f"  {regime:6s} {name:11s} cache {wall['cache']:6.1f} | {cpu['cache']:6.1f}   fine-tune "
                  f"{epochs[name]} ep {wall['train']:6.1f} | {cpu['train']:6.1f}   extract {sets[name]} set(s) "
                  f"{wall['extract']:6.1f} | {cpu['extract']:6.1f}")
    for k, v in totals.items():
        print(f"  total ({k}): {v:7.1f} s = {100 * v / BUDGET_S:4.0f} % of the {BUDGET_S} s budget for all four demo "
              "systems (scorers, fusion and notebooks share it)")


def bench_base(steps: int = 2) -> None:
    """A few training steps (aau set) and inference passes of the released shapes, random weights, batch 2."""
    import torch

    from asd_lib.backbones import load_backbone
    from asd_lib.finetune import apply_trainable

    for name, recipe in (("beats-base", None), ("sslam-base", "aau")):
        enc = load_backbone(name, recipe=recipe)
        apply_trainable(enc, "aau")
        for seconds in (2.0, 10.0):
            wave = torch.randn(2, int(seconds * 16000)) * 0.1
            fb = enc.preprocess(wave)
            enc.train()
            t = time.perf_counter()
            for _ in range(steps):
                enc.forward_fbank(fb).mean().backward()
            train_rate = 2 * steps / (time.perf_counter() - t)
            enc.eval()
            t = time.perf_counter()
            with torch.inference_mode():
                for _ in range(steps):
                    enc.forward_fbank(fb)
            infer_rate = 2 * steps / (time.perf_counter() - t)
            print(f"{name:11s} {seconds:4.0f} s clips: train {train_rate:5.2f} samples/s, inference "
                  f"{infer_rate:5.2f} clips/s (paper scale: 1000 x 2 ch per machine per epoch -> "
                  f"{2000 / train_rate / 60:5.1f} min per machine-epoch on this CPU)")
        del enc


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="a generated `small` preset (default: generate one in /tmp)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-base", action="store_true", help="skip the base-shape steps")
    a = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    torch.set_num_threads(a.threads)
    data = _small_data(a.data)
    with tempfile.TemporaryDirectory() as tmp:
        rates = bench_tiny(data, Path(tmp))
    demo_estimate(rates, a.threads)
    if not a.skip_base:
        print()
        bench_base()


if __name__ == "__main__":
    main()
