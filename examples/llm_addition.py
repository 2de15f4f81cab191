"""Fine-tune a small Hugging Face causal LM with eggroll.torch.ES on an exact-match reward.

    python examples/llm_addition.py                 # GPT-2 style (Conv1D), ~10 min on 2 cores
    python examples/llm_addition.py --arch llama    # Llama style (nn.Linear, RMSNorm, rotary)
    python examples/llm_addition.py --smoke         # a few steps, seconds

The task is made here: 3-digit additions written as text, "123+456=" -> "975;" (the sum 579
least significant digit first, the order in which the carries are computed; ';' ends it).
A small causal LM is built from a config (nothing is downloaded), pretrained briefly with
backprop (teacher forcing) until it gets about a third of held-out sums right, then
fine-tuned with evolution strategies on the reward a user would actually care about and that
backprop cannot use: 1 if the greedy answer it *generates* is exactly right, else 0. Each ES
generation folds P members x b fresh prompts into one batched model.generate (every member
decodes with its own low-rank perturbation, KV cache on), scores every (member, prompt),
shapes the rewards per prompt (eggroll.torch.llm.group_fitness) and steps Adam on the
estimate. Held-out accuracy (1,024 sums never used for training) is plotted per generation.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EXTRA_HINT = ('this example needs torch, transformers and tqdm (and matplotlib for the plot): '
              'pip install "eggroll-hyperscale[llm]" matplotlib')
OUT_DIR = Path(__file__).resolve().parent / "out"
DIGITS = 3
VOCAB = list("0123456789+=") + [";", "_"]         # ';' ends an answer (EOS), '_' pads
EOS, PAD = VOCAB.index(";"), VOCAB.index("_")
PROMPT_LEN = 2 * DIGITS + 2                       # "123+456="
ANSWER_LEN = DIGITS + 2                           # up to 4 digits, then ';'
TARGET_GAIN = 0.15


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=("gpt2", "llama"), default="gpt2",
                    help="gpt2: Conv1D + LayerNorm + learned positions; llama: nn.Linear + "
                         "RMSNorm + rotary (default gpt2)")
    ap.add_argument("--generations", type=int, default=700, help="ES generations")
    ap.add_argument("--population", type=int, default=64, help="members (even)")
    ap.add_argument("--prompts", type=int, default=32, help="prompts per generation")
    ap.add_argument("--sigma", type=float, default=0.01, help="perturbation scale")
    ap.add_argument("--lr", type=float, default=1e-3,
                    help="Adam learning rate of the ES phase (decays linearly to a tenth)")
    ap.add_argument("--width", type=int, default=64, help="hidden size")
    ap.add_argument("--layers", type=int, default=2, help="transformer blocks")
    ap.add_argument("--pretrain-target", type=float, default=0.35,
                    help="stop pretraining at this validation accuracy")
    ap.add_argument("--pretrain-steps", type=int, default=2000, help="pretraining step cap")
    ap.add_argument("--eval-every", type=int, default=50, help="generations between tests")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's; 1 is much faster on a machine "
                         "others keep busy: the ops here are small)")
    ap.add_argument("--seed", type=int, default=0, help="data, init and noise seed")
    ap.add_argument("--out", type=Path, default=None,
                    help="learning-curve PNG (default examples/out/llm_addition_<arch>.png); "
                         "a JSON of the figures is written next to it")
    ap.add_argument("--smoke", action="store_true", help="a few steps of each phase (tests)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.generations, args.population, args.prompts = 2, 8, 4
        args.pretrain_steps, args.eval_every, args.pretrain_target = 3, 1, 1.0
    if args.population % 2:
        ap.error("--population: must be even (antithetic pairs)")
    if args.out is None:
        args.out = OUT_DIR / f"llm_addition_{args.arch}.png"
    return args


class Sums:
    """The task: random DIGITS-digit additions; the held-out (a, b) pairs never appear in
    training or validation batches."""

    def __init__(self, seed: int, n_test: int, n_val: int) -> None:
        import numpy as np
        self.np = np
        self.rng = np.random.default_rng(seed)
        pairs = self._pairs(n_test + n_val, np.random.default_rng(seed + 1))
        self.held = {tuple(p) for p in pairs.tolist()}
        self.test, self.val = pairs[:n_test], pairs[n_test:]

    def _pairs(self, n: int, rng):
        np = self.np
        out = np.empty((0, 2), dtype=np.int64)
        while len(out) < n:       # distinct pairs
            p = rng.integers(0, 10 ** DIGITS, size=(n, 2))
            out = np.unique(np.concatenate([out, p]), axis=0)
        return rng.permutation(out)[:n]

    def train_pairs(self, n: int):
        pairs = self.rng.integers(0, 10 ** DIGITS, size=(n, 2))
        keep = [p for p in pairs.tolist() if tuple(p) not in self.held]
        while len(keep) < n:
            p = self.rng.integers(0, 10 ** DIGITS, size=2).tolist()
            if tuple(p) not in self.held:
                keep.append(p)
        return self.np.asarray(keep[:n])


def encode(text: str) -> list[int]:
    return [VOCAB.index(c) for c in text]


def prompt(a: int, b: int) -> str:
    return f"{a:0{DIGITS}d}+{b:0{DIGITS}d}="


def answer(a: int, b: int) -> str:
    """The sum written least significant digit first ("123+456=" -> "975"), the order in
    which carries are computed: a small model learns it far more reliably than the usual
    order, and exact match is exact match either way."""
    return str(a + b)[::-1]


def answers_of(generated, torch) -> list[str | None]:
    """The text before the first ';' of each generated row (None: no ';')."""
    out = []
    for row in generated.tolist():
        text = "".join(VOCAB[t] for t in row)
        out.append(text.split(";")[0] if ";" in text else None)
    return out


def build_model(args: argparse.Namespace, transformers):
    common = dict(vocab_size=len(VOCAB), bos_token_id=EOS, eos_token_id=EOS,
                  pad_token_id=PAD, tie_word_embeddings=True)
    if args.arch == "gpt2":
        cfg = transformers.GPT2Config(n_positions=PROMPT_LEN + ANSWER_LEN, n_embd=args.width,
                                      n_layer=args.layers, n_head=4, **common)
        return transformers.GPT2LMHeadModel(cfg)
    cfg = transformers.LlamaConfig(hidden_size=args.width, intermediate_size=2 * args.width,
                                   num_hidden_layers=args.layers, num_attention_heads=4,
                                   num_key_value_heads=4,
                                   max_position_embeddings=PROMPT_LEN + ANSWER_LEN, **common)
    return transformers.LlamaForCausalLM(cfg)


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = _parse(argv)
    try:
        import numpy as np
        import torch
        import transformers
        from tqdm import tqdm
    except ImportError as e:
        print(f"llm_addition: {EXTRA_HINT}\n  ({e})", file=sys.stderr)
        return 2
    import eggroll.torch
    from eggroll.torch.llm import Monitor, group_fitness

    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    task = Sums(args.seed, n_test=64 if args.smoke else 1024, n_val=32 if args.smoke else 256)
    model = build_model(args, transformers)
    n_params = sum(p.numel() for p in model.parameters())
    gen_kw = dict(max_new_tokens=ANSWER_LEN, do_sample=False, pad_token_id=PAD,
                  eos_token_id=EOS)

    def accuracy(pairs, bs: int = 1024) -> float:
        model.eval()
        right = 0
        with torch.no_grad():
            for s in range(0, len(pairs), bs):
                chunk = pairs[s:s + bs]
                ids = torch.tensor([encode(prompt(a, b)) for a, b in chunk])
                out = model.generate(ids, attention_mask=torch.ones_like(ids), **gen_kw)
                got = answers_of(out[:, PROMPT_LEN:], torch)
                right += sum(g == answer(a, b) for g, (a, b) in zip(got, chunk.tolist()))
        return right / len(pairs)

    # ---- 1. pretraining with backprop (teacher forcing) to partial competence
    print(f"llm_addition: {args.arch}-style causal LM, {n_params / 1e3:.0f}k parameters "
          f"(width {args.width}, {args.layers} blocks), {DIGITS}-digit sums, "
          f"{torch.get_num_threads()} torch threads")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    t0 = time.perf_counter()
    steps = 0
    val_acc = 0.0
    while steps < args.pretrain_steps:
        model.train()
        pairs = task.train_pairs(128)
        x = torch.full((128, PROMPT_LEN + ANSWER_LEN), PAD)
        labels = torch.full_like(x, -100)
        for i, (a, b) in enumerate(pairs.tolist()):
            seq = encode(prompt(a, b) + answer(a, b) + ";")
            x[i, :len(seq)] = torch.tensor(seq)
            labels[i, PROMPT_LEN:len(seq)] = x[i, PROMPT_LEN:len(seq)]
        loss = model(x, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        if steps % 25 == 0 or args.smoke:
            val_acc = accuracy(task.val)
            if val_acc >= args.pretrain_target:
                break
    pretrain_s = time.perf_counter() - t0
    before = accuracy(task.test)
    print(f"pretrained         {steps} backprop steps in {pretrain_s:.0f} s: validation "
          f"{val_acc * 100:.1f}%, held-out test {before * 100:.1f}% exact match")

    # ---- 2. ES fine-tuning on the exact-match reward of generated answers
    P, b = args.population, args.prompts
    es = eggroll.torch.ES(model, sigma=args.sigma, population=P, rank=1, seed=args.seed,
                          shaping="centered_rank", track_changes=True)
    opt = torch.optim.Adam(es.parameters(), lr=args.lr)
    # a noisy estimate and a constant step leave the weights wandering around the optimum;
    # decaying the step lowers that floor
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 1.0 - 0.9 * min(1.0, t / max(1, args.generations)))
    print(f"ES                 population {P} x {b} prompts per generation, rank 1, sigma "
          f"{args.sigma}, Adam lr {args.lr} -> {args.lr / 10:g}, {args.generations} "
          "generations")
    monitor = Monitor(es, total=args.generations, bar=True, desc="ES")
    curve_gen, curve_acc = [0], [before]
    tokens = 0
    t1 = time.perf_counter()
    for g in range(args.generations):
        pairs = task.train_pairs(b)
        ids = torch.tensor([encode(prompt(a, c)) for a, c in pairs.tolist()])
        with es.ask() as pop, monitor.timed() as timer:
            folded, mask = pop.fold(ids, torch.ones_like(ids))       # [P * b, PROMPT_LEN]
            out = model.generate(folded, attention_mask=mask, **gen_kw)
            timer.tokens = out.numel()
        tokens += out.numel()
        got = answers_of(out[:, PROMPT_LEN:], torch)
        truth = [answer(a, c) for a, c in pairs.tolist()]
        rewards = torch.tensor([[float(got[i * b + j] == truth[j]) for j in range(b)]
                                for i in range(P)])                  # [P, b]
        stats = es.tell(group_fitness(rewards))
        opt.step()
        sched.step()
        extra = {}
        if (g + 1) % args.eval_every == 0 or g == args.generations - 1:
            curve_gen.append(g + 1)
            curve_acc.append(accuracy(task.test))
            extra["test_acc"] = curve_acc[-1]
        monitor.update(stats, rewards, **extra)
    monitor.close()
    es_s = time.perf_counter() - t1
    after = curve_acc[-1]
    gain = after - before
    gen_s = sum(r.get("seconds", 0.0) for r in monitor.history)
    ok = gain >= TARGET_GAIN
    total_s = time.perf_counter() - t_start
    figures = {"arch": args.arch, "parameters": n_params, "pretrain_steps": steps,
               "pretrain_s": pretrain_s, "test_before": before, "test_after": after,
               "gain": gain, "generations": args.generations, "population": P, "prompts": b,
               "es_s": es_s, "generate_s": gen_s, "tokens_per_s": tokens / gen_s if gen_s else None,
               "total_s": total_s, "torch_threads": torch.get_num_threads(),
               "curve": {"generation": curve_gen, "test_accuracy": curve_acc},
               "reward_mean": [r.get("reward_mean") for r in monitor.history],
               "pair_disagreement": [r.get("pair_disagreement") for r in monitor.history]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(figures, indent=1))
    title = (f"eggroll.torch.ES on a {args.arch}-style LM ({n_params / 1e3:.0f}k params), "
             f"exact-match reward: {before * 100:.1f}% -> {after * 100:.1f}%")
    if save_curve(args.out, curve_gen, curve_acc, figures["reward_mean"], title):
        print(f"learning curve     {args.out}")
    print(f"held-out accuracy  {before * 100:.1f}% -> {after * 100:.1f}% "
          f"({gain * 100:+.1f} points; target +{TARGET_GAIN * 100:.0f}: "
          f"{'reached' if ok else 'NOT reached'})")
    print(f"time               ES {es_s / 60:.1f} min ({args.generations} generations, "
          f"{P * b} sequences each; {figures['tokens_per_s'] or 0:.0f} tokens/s in generate), "
          f"total {total_s / 60:.1f} min")
    return 0 if ok or args.smoke else 1


def save_curve(path: Path, gens: list[int], acc: list[float], reward: list[float | None],
               title: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    ax.plot(range(1, len(reward) + 1), [r or 0.0 for r in reward], lw=0.8, alpha=0.6,
            label="population mean reward (training prompts)")
    ax.plot(gens, acc, "o-", ms=3, color="C1", label="held-out exact match (mean model)")
    ax.axhline(acc[0] + TARGET_GAIN, color="grey", ls="--", lw=0.8, label="start + 15 points")
    ax.set_xlabel("ES generation")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


if __name__ == "__main__":
    sys.exit(main())
