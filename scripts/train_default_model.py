#!/usr/bin/env python
"""Train seqsched's built-in default model: a tiny Llama chat model on Alpaca.

Reproducible (seeded) and CPU-only. Nothing from the data set is written into
the repository except the trained weights, the tokenizer and a training log
(path, sha256, counts and the loss curve).

    python scripts/train_default_model.py /path/to/alpaca-52k.jsonl \
        --out seqsched/assets/default_model --steps 1300 --max-minutes 35

Resumable: every checkpoint also writes ``--ckpt`` (weights, optimizer, data
order and random state). Run the same command again with ``--resume`` and it
goes on from the last checkpoint, exactly as if it had not stopped. A second
stage warm-starts from a finished model (its tokenizer and weights) with
``--init-from``; the log keeps the log of the stage it started from.

``--gen-every N`` greedily generates held-out prompts every N steps and logs
the share of answers that reach the limit without EOS and their median length.

``--bench`` times a few optimizer steps for a few configurations and exits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import time
from pathlib import Path

import torch

SPECIAL = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
# Jinja chat template: <s><|user|>\n{content}\n<|assistant|>\n{response}</s>\n
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_alpaca(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def user_content(ex: dict) -> str:
    inp = (ex.get("input") or "").strip()
    instr = ex["instruction"].strip()
    return instr + "\n" + inp if inp else instr


def train_tokenizer(rows: list[dict], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )

    def texts():
        for ex in rows:
            yield user_content(ex)
            yield ex["output"]

    tok.train_from_iterator(texts(), trainer=trainer, length=2 * len(rows))
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def encode(tokenizer, rows: list[dict], max_len: int):
    """Return list of (input_ids, n_prompt) with response+EOS appended."""
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": user_content(ex)}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for ex in rows
    ]
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer([ex["output"] for ex in rows], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    out = []
    for p, r in zip(p_ids, r_ids, strict=True):
        ids = p + r + [eos]
        if len(ids) <= max_len and r:
            out.append((ids, len(p)))
    return out


def make_batches(data, max_tokens: int, rng: random.Random):
    """Length-bucketed batches of at most max_tokens (incl. padding), shuffled."""
    idx = list(range(len(data)))
    rng.shuffle(idx)
    batches = []
    chunk = 4096
    for c in range(0, len(idx), chunk):
        part = sorted(idx[c : c + chunk], key=lambda i: len(data[i][0]))
        cur, cur_max = [], 0
        for i in part:
            L = len(data[i][0])
            if cur and max(cur_max, L) * (len(cur) + 1) > max_tokens:
                batches.append(cur)
                cur, cur_max = [], 0
            cur.append(i)
            cur_max = max(cur_max, L)
        if cur:
            batches.append(cur)
    rng.shuffle(batches)
    return batches


def collate(data, batch, pad_id: int):
    L = max(len(data[i][0]) for i in batch)
    ids = torch.full((len(batch), L), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), L), -100, dtype=torch.long)
    for r, i in enumerate(batch):
        seq, n_p = data[i]
        ids[r, : len(seq)] = torch.tensor(seq)
        labels[r, n_p : len(seq)] = torch.tensor(seq[n_p:])
    # Right padding + causal attention: pads never influence real positions,
    # so no attention mask is needed (keeps SDPA on its fast is_causal path).
    return ids, labels


def build_model(tokenizer, hidden: int, layers: int, heads: int, inter: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(cfg)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def save(model, tokenizer, out: Path, log: dict):
    from transformers import GenerationConfig

    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=256,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")


@torch.no_grad()
def eval_loss(model, data, batches, pad_id, use_bf16):
    model.eval()
    tot, n = 0.0, 0
    for b in batches:
        ids, labels = collate(data, b, pad_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            loss = model(input_ids=ids, labels=labels).loss
        k = int((labels[:, 1:] != -100).sum())
        tot += float(loss) * k
        n += k
    model.train()
    return tot / max(1, n)


@torch.no_grad()
def generation_check(model, tokenizer, rows: list[dict], limit: int) -> dict:
    """Greedy answers to held-out prompts: share at the limit, median length."""
    model.eval()
    tokenizer.padding_side = "left"
    lengths = []
    for k in range(0, len(rows), 32):
        part = rows[k : k + 32]
        prompts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": user_content(ex)}], add_generation_prompt=True, tokenize=False
            )
            for ex in part
        ]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=limit, do_sample=False)
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            eos = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else None
            lengths.append(eos if eos is not None else limit)
    model.train()
    lengths.sort()
    return {
        "n": len(lengths),
        "at_limit": round(sum(1 for n in lengths if n >= limit) / len(lengths), 4),
        "median": lengths[len(lengths) // 2],
        "mean": round(sum(lengths) / len(lengths), 1),
    }


def unlikelihood_loss(logits, labels):
    """Token-level unlikelihood (Welleck et al., ICLR 2020): at each answer position, push down
    the probability of the answer tokens already generated before it (except the target).
    It is what keeps a small model's greedy answers from looping back on themselves."""
    logits, targets = logits[:, :-1].float(), labels[:, 1:]
    valid = targets != -100
    onehot = torch.nn.functional.one_hot(targets.clamp(min=0), logits.shape[-1]).float() * valid[..., None]
    seen = (onehot.cumsum(dim=1) - onehot) > 0  # tokens strictly before each position
    candidates = seen & (onehot == 0) & valid[..., None]
    probs = logits.softmax(dim=-1)
    penalty = -torch.log((1 - probs).clamp(min=1e-5)) * candidates
    return penalty.sum() / valid.sum().clamp(min=1)


def save_checkpoint(path: Path, model, opt, state: dict) -> None:
    """Everything needed to go on exactly: weights, optimizer, data order, random state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "torch_rng": torch.get_rng_state(), **state},
        tmp,
    )
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="Alpaca jsonl: {id, instruction, input, output} per line")
    ap.add_argument("--out", default="seqsched/assets/default_model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--inter", type=int, default=688)
    ap.add_argument("--max-len", type=int, default=384)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=1300)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--bf16", type=int, default=1, help="bf16 autocast (weights stay fp32)")
    ap.add_argument("--ckpt-every", type=int, default=100)
    ap.add_argument(
        "--threads", type=int, default=1, help="1 is ~3x faster than 2 when other processes share the CPU (measured)"
    )
    ap.add_argument(
        "--max-minutes", type=float, default=0.0, help="safety stop: save and exit after this much wall time (0 = off)"
    )
    ap.add_argument("--ckpt", default="runs/default_model.ckpt.pt", help="resumable checkpoint file")
    ap.add_argument("--resume", action="store_true", help="go on from --ckpt")
    ap.add_argument("--init-from", default=None, help="warm start: tokenizer and weights of a finished model")
    ap.add_argument("--gen-every", type=int, default=0, help="greedy generation check every N steps (0 = off)")
    ap.add_argument("--gen-prompts", type=int, default=64)
    ap.add_argument(
        "--stop-at", type=int, default=None, help="save and stop after this step, keeping the schedule of --steps"
    )
    ap.add_argument(
        "--unlikelihood", type=float, default=0.0, help="weight of the token-level unlikelihood loss (0 = off)"
    )
    ap.add_argument("--bench", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    t0 = time.time()
    rows = load_alpaca(args.data)
    # Hold out ids % 100 == 0 for a validation loss.
    val_rows = [r for r in rows if int(r["id"]) % 100 == 0]
    train_rows = [r for r in rows if int(r["id"]) % 100 != 0]
    if args.init_from:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.init_from)
    else:
        tokenizer = train_tokenizer(train_rows, args.vocab)
    print(f"tokenizer: {len(tokenizer)} tokens in {time.time() - t0:.1f}s", flush=True)
    data = encode(tokenizer, train_rows, args.max_len)
    val = encode(tokenizer, val_rows, args.max_len)
    n_tok = sum(len(s) for s, _ in data)
    print(f"train examples {len(data)}/{len(train_rows)} ({n_tok} tokens), val {len(val)}", flush=True)
    pad_id = tokenizer.pad_token_id

    if args.bench:
        bench(args, tokenizer, data, pad_id)
        return

    if args.init_from:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(args.init_from, dtype=torch.float32)
    else:
        model = build_model(tokenizer, args.hidden, args.layers, args.heads, args.inter, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params}", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    rng = random.Random(args.seed)
    val_batches = make_batches(val, args.batch_tokens, random.Random(1))[:10]
    log = {
        "data_path": os.path.abspath(args.data),
        "data_sha256": sha256_file(args.data),
        "n_rows": len(rows),
        "n_train_examples": len(data),
        "n_val_examples": len(val),
        "holdout_rule": "int(id) % 100 == 0",
        "max_len": args.max_len,
        "args": {k: v for k, v in vars(args).items() if k != "bench"},
        "stopped_early": False,
        "n_params": n_params,
        "weights_dtype": "float32",
        "train_compute": "bf16 autocast" if args.bf16 else "float32",
        "steps_done": 0,
        "epochs": 0.0,
        "tokens_seen": 0,
        "loss_tokens_seen": 0,
        "loss_curve": [],
        "val_curve": [],
        "wall_s": 0.0,
        "gen_curve": [],
        "resumed_at": [],
    }
    if args.init_from:
        log["init_from"] = os.path.abspath(args.init_from)
        log["init_log"] = json.loads((Path(args.init_from) / "training_log.json").read_text())
        log["architecture"] = "from init_from"
    out = Path(args.out)
    ckpt = Path(args.ckpt)
    gen_rows = val_rows[: args.gen_prompts]
    batches, bi, epoch = make_batches(data, args.batch_tokens, rng), 0, 0
    start, wall_before = 0, 0.0
    if args.resume:
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["torch_rng"])
        rng.setstate(state["py_rng"])
        batches, bi, epoch, start, log = state["batches"], state["bi"], state["epoch"], state["step"], state["log"]
        wall_before = log["wall_s"]
        log["resumed_at"].append(start)
        print(f"resumed from {ckpt} at step {start}", flush=True)
    model.train()
    t_train = time.time()
    run_loss, run_n = 0.0, 0
    for step in range(start, args.steps):
        if bi >= len(batches):
            batches, bi, epoch = make_batches(data, args.batch_tokens, rng), 0, epoch + 1
        b = batches[bi]
        bi += 1
        ids, labels = collate(data, b, pad_id)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.bf16)):
            outputs = model(input_ids=ids, labels=labels)
        loss = outputs.loss
        total = loss + args.unlikelihood * unlikelihood_loss(outputs.logits, labels) if args.unlikelihood else loss
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        log["tokens_seen"] += sum(len(data[i][0]) for i in b)
        log["loss_tokens_seen"] += int((labels != -100).sum())
        run_loss += float(loss.detach())
        run_n += 1
        if (step + 1) % 25 == 0:
            el = time.time() - t_train
            log["loss_curve"].append([step + 1, round(run_loss / run_n, 4)])
            print(
                f"step {step + 1} loss {run_loss / run_n:.4f} lr {opt.param_groups[0]['lr']:.2e} {el:.0f}s",
                flush=True,
            )
            run_loss, run_n = 0.0, 0
        over = args.max_minutes > 0 and time.time() - t0 > 60 * args.max_minutes
        over = over or (args.stop_at is not None and step + 1 >= args.stop_at)
        if over or (step + 1) % args.ckpt_every == 0 or step + 1 == args.steps:
            vl = eval_loss(model, val, val_batches, pad_id, bool(args.bf16))
            log["val_curve"].append([step + 1, round(vl, 4)])
            log["steps_done"] = step + 1
            log["epochs"] = round(epoch + bi / len(batches), 3)
            log["wall_s"] = round(wall_before + time.time() - t0, 1)
            if args.gen_every and ((step + 1) % args.gen_every == 0 or step + 1 == args.steps):
                gen = generation_check(model, tokenizer, gen_rows, 256)
                log["gen_curve"].append([step + 1, gen])
                print(f"gen step {step + 1} {gen}", flush=True)
            save(model, tokenizer, out, log)
            save_checkpoint(
                ckpt,
                model,
                opt,
                {"py_rng": rng.getstate(), "batches": batches, "bi": bi, "epoch": epoch, "step": step + 1, "log": log},
            )
            print(f"ckpt step {step + 1} val_loss {vl:.4f} saved to {out} and {ckpt}", flush=True)
            if over:
                print("time limit reached; stopping early", flush=True)
                log["stopped_early"] = True
                save(model, tokenizer, out, log)
                break
    print(f"done in {time.time() - t0:.0f}s", flush=True)


def bench(args, tokenizer, data, pad_id):
    rng = random.Random(0)
    configs = [
        # hidden, layers, heads, inter, batch_tokens, bf16
        (256, 4, 4, 688, args.batch_tokens, 0),
        (256, 4, 4, 688, args.batch_tokens, 1),
        (256, 6, 4, 688, args.batch_tokens, 1),
        (320, 4, 5, 864, args.batch_tokens, 1),
    ]
    batches = make_batches(data, args.batch_tokens, rng)[:12]
    for h, n_layers, nh, it, bt, bf in configs:
        model = build_model(tokenizer, h, n_layers, nh, it, 0)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        n_params = sum(p.numel() for p in model.parameters())
        toks, t = 0, 0.0
        for k, b in enumerate(batches):
            ids, labels = collate(data, b, pad_id)
            s = time.time()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(bf)):
                loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if k >= 2:
                t += time.time() - s
                toks += ids.numel()
        print(
            f"h{h} L{n_layers} heads{nh} ff{it} bt{bt} bf16={bf} params={n_params} "
            f"{t / (len(batches) - 2):.3f} s/step {toks / t:.0f} tok/s",
            flush=True,
        )


if __name__ == "__main__":
    main()
