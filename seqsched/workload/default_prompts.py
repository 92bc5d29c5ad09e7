"""seqsched's own default workload: deterministic, template-built prompts.

Every prompt comes from an instruction template (a *family*) whose main slot
is filled from a topic pool written for this project.  Families span the
response lengths real assistants see: one-word answers and labels, yes/no,
rewrites, lists, explanations, emails, stories and essays.

Each topic pool is split in two by position: even positions feed the default
workload (:func:`default_prompts`), odd positions feed
:func:`predictor_training_prompts`, so the two never share a prompt (and not
even a topic), whatever the seeds.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["FAMILIES", "default_prompts", "predictor_training_prompts"]

# fmt: off
_COUNTRIES = ["France", "Japan", "Brazil", "Canada", "Egypt", "Kenya", "Norway", "Peru",
              "India", "Spain", "Mexico", "Chile", "Italy", "Greece", "Vietnam", "Poland"]
_WORDS = ["happy", "ancient", "generous", "bright", "fragile", "quiet", "rapid", "honest",
          "narrow", "brave", "cold", "simple", "early", "heavy", "polite", "rough"]
_REVIEWS = [
    "The battery lasts all day and the screen is gorgeous.",
    "It broke after two days and support never answered.",
    "Honestly the best pizza I have had in years.",
    "The hotel room was dirty and smelled of smoke.",
    "Shipping was fast and the fit is perfect.",
    "The movie dragged on and the ending made no sense.",
    "My kids love this game and play it every evening.",
    "Too expensive for what you get, I want a refund.",
    "The staff were friendly and the coffee was excellent.",
    "The app crashes every time I open the camera.",
    "A cozy little book that I finished in one sitting.",
    "The headphones hurt my ears after ten minutes.",
    "Setup took five minutes and everything just worked.",
    "The soup was cold and the waiter ignored us all night.",
    "Great value, I already ordered a second one for my sister.",
    "The instructions were confusing and two screws were missing.",
]
_QUESTIONS = [
    "Is the sun a star?", "Can penguins fly?", "Is water wet at room temperature?",
    "Is Mount Everest the tallest mountain above sea level?", "Do spiders have six legs?",
    "Is a tomato a fruit?", "Can sound travel through a vacuum?", "Is gold a metal?",
    "Do plants need sunlight to grow?", "Is the Pacific the largest ocean?",
    "Is zero an even number?", "Do bats use echolocation?", "Is the Moon larger than Earth?",
    "Do whales breathe air?", "Is Paris in Germany?", "Can ice float on water?",
]
_SENTENCES = [
    "the meeting got moved to tomorrow because the boss is sick",
    "we gotta finish this report before friday or we are in trouble",
    "the kids was playing outside when the rain started",
    "this phone is super cheap but it works pretty good",
    "I think maybe we should probably consider changing the plan",
    "the new park downtown is really nice and lots of people go there",
    "our team won the game last night after a tough second half",
    "she don't like waiting in long lines at the store",
    "the train was late again so I missed the start of class",
    "he fixed the old bike and now rides it to work every day",
]
_THINGS = ["fruits that are high in vitamin C", "ways to save money on groceries",
           "famous painters", "indoor hobbies", "benefits of regular exercise",
           "programming languages", "tips for better sleep", "animals that live in the desert",
           "board games for families", "ways to reduce plastic waste",
           "items to pack for a camping trip", "common job interview questions",
           "healthy breakfast ideas", "renewable energy sources",
           "skills every student should learn", "things to do on a rainy day"]
_CONCEPTS = ["photosynthesis", "inflation", "how vaccines work", "machine learning",
             "the water cycle", "compound interest", "how a rainbow forms", "supply and demand",
             "how the internet works", "climate change", "the theory of evolution",
             "how airplanes stay in the air", "blockchain", "the greenhouse effect",
             "how memory works in the brain", "why the sky is blue"]
_CHARACTERS = ["a lonely robot", "a young baker", "an old fisherman", "a curious cat",
               "a retired astronaut", "a shy dragon", "a lost puppy", "a teenage inventor",
               "a village teacher", "a talking tree", "a clumsy wizard", "a night-shift nurse"]
_SITUATIONS = ["finds a mysterious map", "has to save the town festival",
               "makes an unlikely friend", "gets lost in a big city", "learns to be brave",
               "discovers a hidden talent"]
_ESSAY_TOPICS = ["the importance of education", "the impact of social media on teenagers",
                 "why reading matters", "the future of electric cars",
                 "the benefits and risks of artificial intelligence",
                 "the role of sports in society", "protecting the oceans",
                 "working from home", "the value of learning a second language",
                 "the history of the printing press", "city life versus country life",
                 "the importance of friendship", "space exploration", "healthy eating habits",
                 "the role of art in everyday life", "volunteering in the community"]
_EMAILS = [("my manager", "taking a day off next week"),
           ("a customer", "a delayed order"), ("my landlord", "a broken heater"),
           ("a professor", "an extension for my assignment"), ("my team", "the new project schedule"),
           ("a friend", "plans for the weekend"), ("a hiring manager", "following up after an interview"),
           ("a neighbor", "a noisy party"), ("a supplier", "a price increase"),
           ("my colleagues", "a farewell lunch"), ("a hotel", "a booking change"),
           ("a client", "the results of the quarterly review")]
_PAIRS = [("cats", "dogs"), ("tea", "coffee"), ("trains", "planes"), ("summer", "winter"),
          ("books", "movies"), ("renting", "buying a home"), ("Python", "Java"),
          ("solar power", "wind power"), ("email", "phone calls"), ("running", "swimming"),
          ("cities", "villages"), ("paper books", "e-readers")]
_ARITH = [(12, 7), (45, 38), (9, 8), (120, 35), (66, 14), (23, 19), (300, 150), (81, 9),
          (17, 25), (54, 46), (11, 12), (99, 1), (64, 16), (7, 6), (250, 75), (13, 3)]
_ACTIVITIES = ["staying focused while studying", "learning to cook", "starting a garden",
               "running a first marathon", "public speaking", "traveling on a budget",
               "keeping a plant alive", "writing a resume", "learning to play guitar",
               "staying healthy in winter", "managing stress", "making new friends"]

# Optional closing request shared by all families ("" = none, drawn more often).
_SUFFIXES = ["", "", "", "Be concise.", "Please be thorough.", "Use simple language."]

# name: (weight, template, topic pool, other slots, takes a suffix).  A topic is a
# tuple of slot values (or a single value); other slots are shared modifiers,
# never split.  Short-answer families take no suffix (it would contradict them).
FAMILIES: dict[str, tuple[float, str, list[Any], dict[str, list[str]], bool]] = {
    "capital": (6, "{n}", _COUNTRIES, {"n": ["What is the capital of {0}?",
                "Name the capital city of {0}.",
                "Which city is the capital of {0}? Answer with one word."]}, False),
    "word": (5, "{n}", _WORDS, {"n": ["What is the opposite of the word \"{0}\"?",
             "Give a synonym for the word \"{0}\".", "Name a word that rhymes with \"{0}\"."]}, False),
    "sentiment": (8, "Classify the sentiment of this review as {n}.\n{0}", _REVIEWS,
                  {"n": ["positive or negative", "positive, negative or neutral"]}, False),
    "yes_no": (7, "{n}", _QUESTIONS, {"n": ["Answer yes or no: {0}", "{0} Answer with yes or no only.",
               "{0} Answer yes or no and explain briefly."]}, False),
    "arithmetic": (5, "What is {0} {n} {1}?", _ARITH, {"n": ["plus", "minus", "times"]}, False),
    "rewrite": (8, "Rewrite the following sentence in {n}.\n{0}", _SENTENCES,
                {"n": ["a more formal tone", "correct English", "a friendlier tone", "fewer words"]}, True),
    "list": (10, "List {n} {0}.", _THINGS, {"n": ["three", "five", "seven", "ten"]}, True),
    "tips": (7, "Give {n} tips for {0}.", _ACTIVITIES, {"n": ["three", "five"]}, True),
    "explain": (10, "Explain {0} {n}.", _CONCEPTS,
                {"n": ["in simple terms", "in one sentence", "to a ten-year-old", "in detail"]}, True),
    "compare": (6, "Compare {0} and {1}. {n}", _PAIRS,
                {"n": ["Keep it short.", "Give the pros and cons of each.", ""]}, True),
    "email": (8, "Write {n} email to {0} about {1}.", _EMAILS,
              {"n": ["an", "a short", "a polite", "a formal"]}, True),
    "story": (8, "Write a short story about {0} who {x}.", _CHARACTERS, {"x": _SITUATIONS}, True),
    "poem": (4, "Write a poem about {0}.", _ESSAY_TOPICS, {}, True),
    "essay": (8, "Write {n} about {0}.", _ESSAY_TOPICS,
              {"n": ["an essay", "a detailed essay", "a five-paragraph essay", "a blog post"]}, True),
}
# fmt: on


def _half(pool: list[Any], part: int) -> list[Any]:
    return pool[part::2]


def _render(template: str, topic: object, mods: dict[str, str], suffix: str) -> str:
    values = topic if isinstance(topic, tuple) else (topic,)
    for key, val in mods.items():  # a modifier may itself hold "{0}"
        template = template.replace("{" + key + "}", val)
    text = template.format(*values)
    lines = [" ".join(line.split()) for line in text.split("\n")]
    if suffix:  # the closing request goes after the instruction, before any input
        lines[0] = lines[0] + " " + suffix
    return "\n".join(lines).strip()


def _generate(n: int, seed: int, part: int) -> list[str]:
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(f"seqsched-workload-{part}-{seed}")
    names = sorted(FAMILIES)
    weights = [FAMILIES[k][0] for k in names]
    space = 0
    for k in names:
        _, _, pool, slots, open_ended = FAMILIES[k]
        size = len(_half(pool, part)) * (len(set(_SUFFIXES)) if open_ended else 1)
        for opts in slots.values():
            size *= len(set(opts))
        space += size
    if n > space:
        raise ValueError(f"at most {space} distinct prompts available, asked for {n}")
    out: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * max(1, n) + 10_000:
            raise RuntimeError("could not draw enough distinct prompts")
        fam = rng.choices(names, weights=weights)[0]
        _, template, pool, slots, open_ended = FAMILIES[fam]
        topic = rng.choice(_half(pool, part))
        mods = {k: rng.choice(v) for k, v in slots.items()}
        prompt = _render(template, topic, mods, rng.choice(_SUFFIXES) if open_ended else "")
        if prompt not in seen:
            seen.add(prompt)
            out.append(prompt)
    return out


def default_prompts(n: int = 256, seed: int = 0) -> list[str]:
    """The default benchmark workload: ``n`` distinct prompts, deterministic in ``seed``."""
    return _generate(n, seed, part=0)


def predictor_training_prompts(n: int, seed: int) -> list[str]:
    """Prompts for training length predictors; disjoint from every default workload.

    Same template families, but topics come from the other half of each pool.
    """
    out = _generate(n, seed, part=1)
    overlap = set(out) & set(default_prompts(min(n, 256), seed))
    assert not overlap, f"predictor prompts overlap the default workload: {sorted(overlap)[:3]}"
    return out


def main(argv: list[str] | None = None) -> None:
    """Print prompts, one per line (text) or as request JSONL, to try seqsched's commands on."""
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(prog="python -m seqsched.workload.default_prompts", description=main.__doc__)
    p.add_argument("-n", type=int, default=256, help="how many prompts (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument(
        "--training",
        action="store_true",
        help="the predictor-training prompts, disjoint from the benchmark workload (default: the workload)",
    )
    p.add_argument(
        "--jsonl",
        action="store_true",
        help='request lines {"custom_id", "prompt"} instead of text (text: one prompt a line, a prompt\'s own line '
        "breaks become spaces; --jsonl keeps them)",
    )
    p.add_argument(
        "--batch-lines",
        metavar="MODEL",
        nargs="?",
        const="seqsched/assets/default_model",
        help="OpenAI Batch request lines for /v1/chat/completions, each asking MODEL (default: the built-in "
        "model, as `seqsched serve --model seqsched/assets/default_model` names it), greedy, 128 tokens at most",
    )
    args = p.parse_args(argv)
    prompts = predictor_training_prompts(args.n, args.seed) if args.training else default_prompts(args.n, args.seed)
    prefix = "train" if args.training else "default"
    joined = 0
    for i, prompt in enumerate(prompts):
        if args.batch_lines:
            body = {"model": args.batch_lines, "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": 128, "temperature": 0}  # fmt: skip
            print(json.dumps({"custom_id": f"{prefix}-{i}", "method": "POST", "url": "/v1/chat/completions",
                              "body": body}))  # fmt: skip
            continue
        if args.jsonl:
            print(json.dumps({"custom_id": f"{prefix}-{i}", "prompt": prompt}))
            continue
        joined += "\n" in prompt
        print(" ".join(prompt.split("\n")))
    if joined:
        print(f"{joined} prompts spanned several lines: their line breaks are spaces here (--jsonl keeps them)",
              file=sys.stderr)


if __name__ == "__main__":
    main()
