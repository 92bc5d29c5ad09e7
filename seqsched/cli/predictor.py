"""`seqsched predictor train|eval|convert`: fit a length predictor on a length trace, score
one (Error, Acc-50, Acc-100, Kendall tau, under-predictions, ms per prompt), or rewrite one
an older seqsched pickled in the format that loads without running code."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seqsched.cli.engine_args import add_threads_arg, resolve_threads
from seqsched.cli.help import HelpFormatter

if TYPE_CHECKING:
    from seqsched.data.traces import Trace
    from seqsched.predict.base import LengthPredictor

TRAIN_KINDS = ("proxy", "probe", "lora", "constant")
EVAL_KINDS = ("pia", "oracle", "constant")  # kinds scored without a saved directory


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predictor", help="train and evaluate length predictors", description=__doc__, formatter_class=HelpFormatter
    )
    sub = p.add_subparsers(dest="predictor_command", required=True)

    t = sub.add_parser(
        "train",
        help="fit a predictor on a trace and save it",
        description="Fit a length predictor on a trace (each prompt and its length field, --target) and save it "
        "as a directory that run, bench, simulate and serve read with --predictor. Kinds: proxy (a text model on "
        "the prompt: fast, no model needed), probe (a regressor on the serving model's hidden state), lora (the "
        "paper's perception module), constant (one length: the baseline).",
        formatter_class=HelpFormatter,
    )
    t.add_argument(
        "--kind",
        choices=TRAIN_KINDS,
        required=True,
        help="proxy: a text model, no LLM needed, cheapest; probe: a regressor on the serving model's hidden "
        "state (one prefill); lora: the paper's perception module (slowest to train)",
    )
    t.add_argument(
        "-o", "--output", "--out", dest="output", type=Path, required=True, help="directory to save the predictor in"
    )
    _data_args(t, default_split=None)
    t.add_argument(
        "--holdout",
        type=float,
        default=0.1,
        help="fit on the rest, and report this fraction's Error, Acc-50 and tau next to the best constant's "
        "(0: fit on everything, no report)",
    )
    t.add_argument("--seed", type=int, default=0, help="seed of the fit")
    t.add_argument("--epochs", type=int, default=1, help="lora")
    t.add_argument("--lr", type=float, default=3e-4, help="lora")
    t.add_argument("--lora-r", type=int, default=8, help="lora")
    t.add_argument("--lora-alpha", type=int, default=16, help="lora")
    t.add_argument("--train-batch-size", type=int, default=8, help="lora")
    t.add_argument("--max-steps", type=int, default=None, help="lora: stop after this many steps")
    t.add_argument("--regressor", choices=["ridge", "quantile"], default="ridge", help="probe")
    t.add_argument(
        "--quantile",
        type=float,
        default=None,
        help="proxy: predict this quantile instead of the median; probe with --regressor quantile (default 0.7)",
    )
    t.add_argument("--num-layers", type=int, default=1, help="probe: average the last k layers")
    t.set_defaults(func=train)

    e = sub.add_parser(
        "eval",
        help="score a saved predictor (or pia/oracle/constant) on a trace",
        description="Score a predictor against a trace's lengths: the paper's Error (mean |predicted - actual|), "
        "Acc-50 and Acc-100, and Kendall's tau (how well it orders requests, which is what scheduling uses).",
        formatter_class=HelpFormatter,
    )
    e.add_argument("path", type=Path, nargs="?", help="a saved predictor directory")
    e.add_argument("--kind", choices=EVAL_KINDS, help="score a predictor that needs no saved directory")
    _data_args(e, default_split=None)
    e.add_argument("--margin-scale", type=float, default=1.0, help="predict ceil(scale * p + add)")
    e.add_argument("--margin-add", type=float, default=0.0, help="safety margin, in tokens")
    e.add_argument(
        "-o",
        "--output",
        "--json",
        dest="output",
        type=Path,
        help="also write the metrics to this JSON file (- for stdout)",
    )
    e.set_defaults(func=evaluate)

    c = sub.add_parser(
        "convert",
        help="rewrite a pickled (older seqsched) predictor in the safe array format",
        formatter_class=HelpFormatter,
    )
    c.add_argument("source", type=Path, help="the old predictor directory (proxy.joblib or regressor.joblib)")
    c.add_argument("destination", type=Path, help="a new directory for the converted predictor")
    c.add_argument(
        "--trust-pickle",
        action="store_true",
        help="required: reading the old files unpickles them, which runs any code they name; "
        "only for a predictor whose origin you trust",
    )
    c.set_defaults(func=convert)


def _data_args(p: argparse.ArgumentParser, default_split: str | None) -> None:
    p.add_argument("--trace", type=Path, required=True, help="length trace (JSONL or the paper's JSON)")
    p.add_argument(
        "--prompts",
        type=Path,
        help="prompt texts by id (request JSONL or one prompt per line); default: the trace's instruction",
    )
    p.add_argument("--split", default=default_split, help="only records of this split (e.g. train, val)")
    p.add_argument(
        "--target",
        default="max",
        help="the length to learn and score: 'max' over the L_t* fields (the paper), or one field, e.g. L_t0.0",
    )
    p.add_argument("--first", type=int, default=None, help="only the first N records (after --split)")
    p.add_argument("--model", help="the serving model, for probe/lora/pia (default: the built-in model)")
    p.add_argument("--limit", type=int, default=512, help="max_new_tokens: predictions are clamped to it")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    add_threads_arg(p)


def train(args: argparse.Namespace) -> int:
    from seqsched.predict.evaluate import trace_texts
    from seqsched.predict.fit_report import MIN_HELD_OUT, fit_report, split_off, write_trained_on

    trace, prompts = _data(args)
    held = None
    if args.holdout:
        fit_trace, held = split_off(trace, args.holdout, within=args.split)
        if len(held) < MIN_HELD_OUT or not len(fit_trace):
            print(
                f"seqsched predictor: {len(trace)} records are too few to hold {args.holdout:.0%} out; "
                "fitting on all, no held-out report",
                file=sys.stderr,
            )
            held = None
        else:
            trace = fit_trace
    texts, lengths = trace_texts(trace, prompts), [r.length(args.target) for r in trace]
    predictor = _new_predictor(args)
    start = time.perf_counter()
    predictor.fit(texts, lengths)
    seconds = time.perf_counter() - start
    predictor.save(args.output)
    source = {"trace": str(args.trace), "split": args.split, "target": args.target, "holdout": args.holdout}
    write_trained_on(args.output, texts, source)
    losses = getattr(predictor, "losses", None)
    extra = f", loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps" if losses else ""
    fitted = f"{args.kind} fitted on {len(texts)} prompts in {seconds:.1f} s"
    print(f"seqsched predictor: {fitted}{extra} -> {args.output}")
    if held is not None:
        report = fit_report(predictor, lengths, held, prompts, args.limit, args.target)
        print(report.table())
        if not report.beats_constant and args.kind != "constant":
            print(
                f"seqsched predictor: WARNING: held-out Error {report.predictor.error:.1f} is not below the best "
                f"constant's {report.constant.error:.1f}: this predictor will not schedule better than none "
                "(more data, more epochs, or another --kind)",
                file=sys.stderr,
            )
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from seqsched.cli import UsageError
    from seqsched.predict.evaluate import evaluate as score
    from seqsched.predict.margin import with_margin

    if (args.path is None) == (args.kind is None):
        raise UsageError("give a saved predictor PATH or --kind, not both and not neither")
    trace, prompts = _data(args)
    predictor = with_margin(_eval_predictor(args, trace), args.margin_scale, args.margin_add)
    metrics, _ = score(predictor, trace, prompts, max_new_tokens=args.limit, knowledge=args.target)
    _warn_overlap(args, trace, prompts)
    print(f"{args.path or args.kind} on {trace.name}:\n{metrics.table()}", file=sys.stderr if _stdout(args) else None)
    fallbacks = getattr(getattr(predictor, "inner", predictor), "num_fallbacks", None)
    if fallbacks:
        print(f"({fallbacks} completions had no number and fell back to the limit)")
    if args.output is not None:
        data = {
            "predictor": str(args.path or args.kind),
            "trace": str(args.trace),
            "split": args.split,
            "target": args.target,
            "margin_scale": args.margin_scale,
            "margin_add": args.margin_add,
            "num_fallbacks": fallbacks,
            **metrics.to_dict(),
        }
        text = json.dumps(data, indent=2) + "\n"
        if _stdout(args):
            sys.stdout.write(text)
        else:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(text)
    return 0


def convert(args: argparse.Namespace) -> int:
    from seqsched.predict.convert import convert_pickled

    kind = convert_pickled(args.source, args.destination, trust_pickle=args.trust_pickle)
    print(f"seqsched predictor: the {kind} predictor in {args.source} rewritten as arrays -> {args.destination}")
    return 0


def _stdout(args: argparse.Namespace) -> bool:
    return args.output is not None and str(args.output) == "-"


def _warn_overlap(args: argparse.Namespace, trace: Any, prompts: dict[str, str] | None) -> None:
    from seqsched.predict.evaluate import trace_texts
    from seqsched.predict.fit_report import overlap_with_training

    if args.path is None:
        return
    overlap = overlap_with_training(args.path, trace_texts(trace, prompts))
    if overlap:
        print(
            f"seqsched predictor: WARNING: {overlap} of the {len(trace)} prompts scored were in this predictor's "
            "training data: its scores flatter it (use a held-out split, e.g. --split val)",
            file=sys.stderr,
        )


def _data(args: argparse.Namespace) -> tuple[Any, dict[str, str] | None]:
    from seqsched.cli import UsageError
    from seqsched.data.prompts import read_prompts
    from seqsched.data.traces import Trace, read_trace

    trace = read_trace(args.trace)
    if args.split is not None:
        if any(r.split is not None for r in trace):
            trace = trace.split(args.split)
            if not len(trace):
                raise UsageError(f"{args.trace}: no records in split {args.split!r}")
        else:
            print(f"seqsched predictor: {args.trace} has no splits; using every record", file=sys.stderr)
    if args.first is not None:
        if args.first < 1:
            raise UsageError(f"--first ({args.first}) must be >= 1")
        trace = Trace(trace.records[: args.first], f"{trace.name}[:{args.first}]")
    prompts = None
    if args.prompts is not None:
        prompts = {r.request_id: r.text for r in read_prompts(args.prompts, args.limit)}
    return trace, prompts


def _model(args: argparse.Namespace) -> tuple[Any, Any]:
    from seqsched.build import resolve_model
    from seqsched.engine.config import EngineConfig
    from seqsched.engine.loading import load_model

    config = EngineConfig(model=str(resolve_model(args.model)), device=args.device, num_threads=resolve_threads(args))
    return load_model(config)


def _new_predictor(args: argparse.Namespace) -> LengthPredictor:
    if args.kind == "constant":
        from seqsched.predict.constant import ConstantPredictor

        return ConstantPredictor()
    if args.kind == "proxy":
        from seqsched.predict.proxy import ProxyConfig, ProxyPredictor

        return ProxyPredictor(ProxyConfig(seed=args.seed, quantile=args.quantile))
    model, tokenizer = _model(args)
    if args.kind == "probe":
        from seqsched.predict.probe import ProbeConfig, ProbePredictor

        quantile = 0.7 if args.quantile is None else args.quantile
        config = ProbeConfig(args.regressor, quantile=quantile, num_layers=args.num_layers, seed=args.seed)
        return ProbePredictor(model, tokenizer, args.limit, config)
    from seqsched.predict.lora import LoraPredictor, LoraTrainConfig

    lora = LoraTrainConfig(
        r=args.lora_r,
        alpha=args.lora_alpha,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.train_batch_size,
        seed=args.seed,
        max_steps=args.max_steps,
    )
    return LoraPredictor(model, tokenizer, args.limit, lora)


def _eval_predictor(args: argparse.Namespace, trace: Trace) -> LengthPredictor:
    if args.kind == "oracle":
        from seqsched.predict.oracle import OraclePredictor

        return OraclePredictor(trace.oracle())
    if args.kind == "constant":
        from seqsched.predict.constant import ConstantPredictor

        return ConstantPredictor()
    if args.kind == "pia":
        from seqsched.predict.pia import PiAPredictor

        model, tokenizer = _model(args)
        return PiAPredictor(model, tokenizer, args.limit)
    from seqsched.predict.base import read_manifest
    from seqsched.predict.registry import load_predictor

    kind = read_manifest(args.path)["kind"]
    if args.model is not None and kind in ("pia", "probe", "lora"):
        model, tokenizer = _model(args)
        return load_predictor(args.path, model=model, tokenizer=tokenizer)
    return load_predictor(args.path)
