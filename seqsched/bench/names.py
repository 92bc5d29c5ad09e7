"""Strategy names, parsed once into a typed value.

Static batching (HF ``generate``, replay, the simulator):

    name     := base ("+" switch)*
    base     := vanilla | oracle | seqsch | pia
    switch   := vbs (the paper's VBS table) | budget (token-budget VBS) | fcr
              | resume (FCR that keeps a failure's tokens and continues after them)
              | sort (sort by predicted length only: no VBS, no FCR)

Continuous batching (a stream plan, ``schedule/stream.py``):

    name     := engine ("+" policy)? ("+kv")? ("+oracle")?
    engine   := continuous (transformers' continuous batching on the serving model)
              | vllm (vLLM's offline engine)
    policy   := sjf | ljf   (none: fcfs, the plain engine)
"""

from __future__ import annotations

from dataclasses import dataclass

STATIC_BASES = ("vanilla", "oracle", "seqsch", "pia")
STREAM_BASES = ("continuous", "vllm")  # the continuous engines
STATIC_SWITCHES = ("vbs", "budget", "fcr", "resume", "sort")
STREAM_SWITCHES = ("sjf", "ljf", "kv", "oracle")


@dataclass(frozen=True)
class StrategyName:
    """A checked strategy name: its base and its switches, in the order given."""

    base: str
    switches: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "+".join((self.base, *self.switches))

    @property
    def stream(self) -> bool:
        """Whether it runs on a continuous engine (a stream plan, not micro-batches)."""
        return self.base in STREAM_BASES

    @property
    def engine(self) -> str:
        """The engine it runs on: a continuous engine's name, or ``static``."""
        return self.base if self.stream else "static"

    def has(self, switch: str) -> bool:
        return switch in self.switches


def parse_strategy(name: str) -> StrategyName:
    """Parse and check a name; a ValueError says what is wrong with it."""
    base, *switches = name.strip().split("+")
    parsed = StrategyName(base, tuple(switches))
    if base in STREAM_BASES:
        _check_stream(name, switches)
    elif base in STATIC_BASES:
        _check_static(name, base, switches)
    else:
        choices = ", ".join(STATIC_BASES + STREAM_BASES)
        raise ValueError(f"strategy {name!r}: unknown base {base!r}; choose from {choices}")
    return parsed


def parse_strategies(names: str) -> list[StrategyName]:
    """A comma-separated list, each name checked, none twice."""
    parsed = [parse_strategy(n) for n in names.split(",") if n.strip()]
    if not parsed:
        raise ValueError(f"no strategy names in {names!r}")
    seen = [str(p) for p in parsed]
    twice = sorted({n for n in seen if seen.count(n) > 1})
    if twice:
        raise ValueError(f"strategy {twice[0]!r} is listed twice")
    return parsed


def _check_static(name: str, base: str, switches: list[str]) -> None:
    unknown = [s for s in switches if s not in STATIC_SWITCHES]
    if unknown:
        raise ValueError(f"strategy {name!r}: unknown switch {unknown[0]!r}; choose from {', '.join(STATIC_SWITCHES)}")
    if base == "vanilla" and switches:
        raise ValueError(f"strategy {name!r}: {base} takes no switches")
    if "vbs" in switches and "budget" in switches:
        raise ValueError(f"strategy {name!r}: choose one of vbs and budget")
    if "fcr" in switches and "resume" in switches:
        raise ValueError(f"strategy {name!r}: choose one of fcr (restart) and resume")
    if "sort" in switches and len(switches) > 1:
        raise ValueError(f"strategy {name!r}: sort means sorted fixed batches alone; it takes no other switch")


def _check_stream(name: str, switches: list[str]) -> None:
    unknown = [s for s in switches if s not in STREAM_SWITCHES]
    if unknown:
        choices = ", ".join(STREAM_SWITCHES)
        raise ValueError(f"strategy {name!r}: unknown switch {unknown[0]!r}; choose from {choices}")
    if "sjf" in switches and "ljf" in switches:
        raise ValueError(f"strategy {name!r}: choose one of sjf and ljf")
    if len(set(switches)) != len(switches):
        raise ValueError(f"strategy {name!r}: a switch is given twice")
    if switches == ["oracle"]:
        raise ValueError(f"strategy {name!r}: +oracle needs a policy or +kv to use the lengths for")
