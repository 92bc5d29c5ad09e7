"""Write a randomly initialised Llama of a named shape, for trace replay.

python scripts/make_random_model.py --shape cpu-8m --tokenizer seqsched/assets/default_model --out runs/cpu-8m
"""

from __future__ import annotations

import argparse

from seqsched.engine.random_model import SHAPES, make_random_model

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), required=True)
    parser.add_argument("--tokenizer", required=True, help="a directory with a tokenizer (its vocab must fit)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = make_random_model(args.shape, args.tokenizer, args.out, args.seed)
    print(f"{args.out}: {args.shape}, {n / 1e6:.1f}M parameters")
