"""Write a randomly initialised Llama of a named shape, for trace replay.

python scripts/make_random_model.py --shape cpu-27m --tokenizer seqsched/assets/default_model --out runs/cpu-27m

It prints the size first; a shape that would not fit in half this machine's memory is
refused unless --force. An existing --out is never replaced without --overwrite.
"""

from __future__ import annotations

import argparse
import os
import sys

from seqsched.engine.random_model import DTYPE_BYTES, SHAPES, make_random_model, resolve_shape

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), required=True)
    parser.add_argument("--tokenizer", required=True, help="a directory with a tokenizer (its vocab must fit)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dtype", choices=sorted(DTYPE_BYTES), default="float32", help="weights' dtype (bfloat16 halves the size)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--force", action="store_true", help="build even if it needs over half the memory")
    args = parser.parse_args()
    shape = resolve_shape(args.shape)
    size = shape.num_parameters() * DTYPE_BYTES[args.dtype]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(f"{args.shape}: {shape.num_parameters() / 1e6:.1f}M parameters, {size / 2**30:.2f} GiB in {args.dtype}")
    if size > memory / 2 and not args.force:
        sys.exit(
            f"refused: {size / 2**30:.1f} GiB of weights on a machine with {memory / 2**30:.1f} GiB of memory "
            "(try --dtype bfloat16, or --force)"
        )
    try:
        n = make_random_model(args.shape, args.tokenizer, args.out, args.seed, args.dtype, args.overwrite)
    except FileExistsError as e:
        sys.exit(str(e))
    print(f"{args.out}: {args.shape}, {n / 1e6:.1f}M parameters, {args.dtype}")
