"""CoLaNET lateral-gating variants (issue 24 follow-up): one-pass trials on a validation split.

    python -m benchmarks.colanet_gating                   # stage 1: 15 mc, "myelin" + gating 10
    python -m benchmarks.colanet_gating --stage 2 --variants a,b   # 45 mc, old "sources", α 0.01
    python -m benchmarks.colanet_gating --stage protocol --variants a   # 60k train, 10k test
    python -m benchmarks.colanet_gating --stage gated --variants base,delay3,column-reward

Validation (stages 1 and 2): train on the first 50k MNIST training images (in the seeded
random order of benchmarks.colanet's single pass), evaluate on the last 10k training images;
the test set is never used to choose. Stage "protocol" is benchmarks.colanet's single pass
(60k training images in seeded random order, the 10k test images), for the chosen variant only.
Every trial is appended to benchmarks/results/colanet/gating_trials.json when it ends; a rerun
skips trials already there (same stage, variant, microcolumns, α, seed). Run with
OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 when sharing the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from benchmarks._common import RESULTS, mnist_root
from myelin.data import load
from myelin.snn import PRESETS, CoLaNET, as_pixels

OUT = RESULTS / "colanet" / "gating_trials.json"

# gating semantics: (a) renew, (b) simultaneous spikers, (c) blocked potential,
# (d) teacher's input discarded too, (e) fresh start every training image. A trial's variant
# may join several with "+", e.g. "exclusive+hold".
VARIANTS: dict[str, dict[str, Any]] = {
    "off": {"lateral_gating": 0},
    "base": {},                                   # the first reading (the parameters' defaults)
    "no-renew": {"gating_renew": False},
    "free": {"gating_simultaneous": "free"},
    "exclusive": {"gating_simultaneous": "exclusive"},
    "hold": {"gating_potential": "hold"},
    "reset": {"gating_potential": "reset"},
    "teacher-passes": {"gating_teacher": False},
    "image-reset": {"gating_image_reset": True},
    # the sources' reward routing and ArNI's depression (issue 24 item 3), tried on "myelin-gated"
    "delay3": {"dopamine_delay": 3},
    "column-reward": {"reward_to": "column", "dopamine_delay": 3},
    "uncond": {"unconditional_depression": -2.6e-5},
    "uncond10": {"unconditional_depression": -2.6e-4},
}
# the settings of preset "sources" before these trials (= "myelin" + these), written out so
# that the stages keep their meaning now that "sources" uses the chosen variant
_SOURCES_BEFORE = {"bias_weight": 3.0, "lateral_gating": 10, "teacher_blocking": False}
STAGES: dict[str, dict[str, Any]] = {
    "1": {"preset": "myelin", "microcolumns": 15, "alpha": 0.005,
          "extra": {"lateral_gating": 10}},
    "2": {"preset": "myelin", "microcolumns": 45, "alpha": 0.01, "extra": _SOURCES_BEFORE},
    "protocol": {"preset": "myelin", "microcolumns": 45, "alpha": 0.01,
                 "extra": _SOURCES_BEFORE},
    # preset "myelin-gated" (the gating chosen in stage 1, r_s from benchmarks.colanet_stability)
    "gated": {"preset": "myelin-gated", "microcolumns": 15, "alpha": 0.005, "extra": {}},
    "gated45": {"preset": "myelin-gated", "microcolumns": 45, "alpha": 0.01, "extra": {}},
}


def _data(stage: str, seed: int) -> tuple[np.ndarray, ...]:
    tr = load("mnist", "train", root=mnist_root())
    x, y = as_pixels(tr), tr.targets.numpy()
    if stage == "protocol":
        te = load("mnist", "test", root=mnist_root())
        order = np.random.RandomState(seed).permutation(len(x))
        return x[order], y[order], as_pixels(te), te.targets.numpy()
    order = np.random.RandomState(seed).permutation(50_000)
    return x[order], y[order], x[50_000:], y[50_000:]


def params_of(stage: str, variant: str) -> dict[str, Any]:
    cfg = STAGES[stage]
    p = {**PRESETS[cfg["preset"]], **cfg["extra"], "alpha": cfg["alpha"]}
    for atom in variant.split("+"):              # "exclusive+hold": both changes
        p.update(VARIANTS[atom])
    return p


def run(stage: str, variant: str, seed: int) -> dict[str, Any]:
    cfg = STAGES[stage]
    p = params_of(stage, variant)
    alpha, silent = p.pop("alpha"), p.pop("silent_synapses", 0)
    x, y, xv, yv = _data(stage, seed)
    CoLaNET(784, 10, 2, alpha, silent, seed, **p).fit(x[:50], y[:50])   # compile first
    net = CoLaNET(784, 10, cfg["microcolumns"], alpha, silent, seed, **p)
    t0 = time.perf_counter()
    net.fit(x, y, progress=False)
    t1 = time.perf_counter()
    pred = net.predict(xv, progress=False)
    t2 = time.perf_counter()
    return {"stage": stage, "variant": variant, "seed": seed,
            "preset": cfg["preset"] + "".join(f", {k}={v}" for k, v in cfg["extra"].items()),
            "microcolumns": cfg["microcolumns"], "alpha": alpha, "params": net.get_params(),
            "split": "60k train / 10k test" if stage == "protocol"
            else "train 50k (first) / validate 10k (last training images)",
            "accuracy": float((pred == yv).mean()), "no_spike": float((pred == -1).mean()),
            "train_seconds": round(t1 - t0, 1), "eval_seconds": round(t2 - t1, 1),
            "effective": [round(float(v), 2) for v in net.stats()["effective"]],
            "command": " ".join(["python -m benchmarks.colanet_gating", *sys.argv[1:]])}


def _key(r: dict[str, Any]) -> tuple:
    return r["stage"], r["variant"], r["seed"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage", default="1", choices=list(STAGES))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    done = json.loads(OUT.read_text()) if OUT.exists() else []
    keys = {_key(r) for r in done}
    for variant in args.variants.split(","):
        if not set(variant.split("+")) <= set(VARIANTS):
            raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
        if (args.stage, variant, args.seed) in keys:
            continue
        r = run(args.stage, variant, args.seed)
        print(f"stage {args.stage} {variant:15s} acc {100 * r['accuracy']:.2f} "
              f"(no spike {100 * r['no_spike']:.1f}) {r['train_seconds']} s", flush=True)
        done.append(r)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(done, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
