"""eggroll.torch.ES against eggroll.ES (NumPy) on the same model and task: time per ES
generation, interleaved in one process.

Run:  PYTHONPATH=python python bench/bench_torch_es.py [--quick] [--repeat R] [--jsonl out]

Task (issue 15's): an MLP 64 -> width -> 10 (tanh) on a shared minibatch of 256 rows of
digits-sized inputs, population 512, rank 1, Adam, cross-entropy fitness. One generation is
ask + forward of the whole population + fitness + tell + the optimiser step:

  torch   eggroll.torch.ES on nn.Sequential(Linear, Tanh, Linear), input xb.expand(P, b, 64)
          (the shared-input path: x W^T once, the corrections per member), torch.optim.Adam
  numpy   eggroll.ES(optimizer="adam") with pop.linear on the materialised [P, b, 64] input
          (made once, outside the timed step), np.tanh in place

Reported: the medians and torch / numpy (target <= 1: the torch front end at least as fast
as the NumPy trainer on the same model), widths 256 and 4096 (256 with --quick).
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

import eggroll
import eggroll.torch as et
from eggroll.bench import harness

P, B, N_IN, N_OUT = 512, 256, 64, 10


def candidates(width: int) -> dict:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((B, N_IN)).astype(np.float32)
    y = rng.integers(0, N_OUT, B)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(N_IN, width), nn.Tanh(), nn.Linear(width, N_OUT))
    es = et.ES(model, sigma=0.05, population=P, seed=0)
    opt = torch.optim.Adam(es.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(X), torch.from_numpy(y).repeat(P)

    def torch_step() -> None:
        with es.ask():
            logits = model(xt.expand(P, B, N_IN))                       # [P, B, 10]
        ce = nn.functional.cross_entropy(logits.reshape(P * B, N_OUT), yt,
                                         reduction="none").reshape(P, B).mean(1)
        es.tell(-ce)
        opt.step()

    params = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    npes = eggroll.ES(params, sigma=0.05, lr=0.01, population=P, optimizer="adam", seed=0)
    xb = np.ascontiguousarray(np.broadcast_to(X, (P, B, N_IN)))          # made once
    onehot = np.eye(N_OUT, dtype=np.float32)[y]                         # [B, 10]

    def numpy_step() -> None:
        pop = npes.ask()
        h = pop.linear("0.weight", xb, bias="0.bias")
        np.tanh(h, out=h)
        logits = pop.linear("2.weight", h, bias="2.bias")               # [P, B, 10]
        logits -= logits.max(-1, keepdims=True)
        ce = (np.log(np.exp(logits).sum(-1)) - (logits * onehot).sum(-1)).mean(1)
        npes.tell(-ce)

    return {"torch": torch_step, "numpy": numpy_step}


def main() -> int:
    args = harness.parser(__doc__.splitlines()[0]).parse_args()
    widths = (256,) if args.quick else (256, 4096)
    with harness.Session(args) as s:
        rows = []
        for width in widths:
            res = harness.measure_interleaved(candidates(width), warmup=1, repeat=args.repeat,
                                              max_rounds=args.repeat)
            rows.append(s.emit({"bench": "torch_es_vs_numpy", "width": width, "P": P, "b": B,
                                **{k: v for name, m in res.items()
                                   for k, v in harness.timing_fields(name, m).items()},
                                "torch_over_numpy": res["torch"]["median_s"]
                                / res["numpy"]["median_s"]}))
        harness.table(rows, ["width", ("torch_median_s", "torch s"),
                             ("numpy_median_s", "numpy s"), ("torch_over_numpy", "torch/numpy")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
