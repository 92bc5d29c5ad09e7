"""Cheap text features of a prompt for the proxy length predictor.

A prompt is an instruction, then "\\n" + an input when there is one (Alpaca style). The
instruction says what kind of answer is wanted (a list, an essay, one word); the input's
size says how much material there is to rewrite or summarize. So the two are featurized
apart: TF-IDF word and character n-grams of the instruction, words of the input, plus a
few hand-made numbers (sizes, requested counts, answer-shape keywords).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from seqsched.predict.tfidf import Tfidf

# Words whose presence in the instruction hints at the answer's shape and size.
_KEYWORDS = (
    "list", "essay", "story", "poem", "article", "blog", "letter", "speech", "script", "dialogue",
    "paragraph", "sentence", "word", "tweet", "headline", "title", "slogan", "haiku", "summar",
    "explain", "describe", "compare", "discuss", "analy", "write", "generate", "create", "design",
    "classify", "identify", "translate", "rewrite", "edit", "convert", "calculate", "find", "name",
    "code", "function", "program", "algorithm", "steps", "guide", "plan", "tips", "ways", "reasons",
    "examples", "short", "brief", "detailed", "yes", "true", "false", "what", "how", "why", "which",
)  # fmt: skip
_NUMBER_WORDS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "twelve": 12, "fifteen": 15, "twenty": 20, "fifty": 50, "hundred": 100,
}  # fmt: skip
_NUMBER = re.compile(r"\b\d{1,4}\b|\b(?:" + "|".join(_NUMBER_WORDS) + r")\b")
_WORD_COUNT = re.compile(r"\b(\d{2,4})(?:\s*(?:-|to)\s*\d{2,4})?[\s-]*words?\b")
NUM_HAND_FEATURES = 12 + len(_KEYWORDS)


def split_prompt(text: str) -> tuple[str, str]:
    """(instruction, input): the first line, and the rest ("" when there is none)."""
    instruction, _, extra = text.partition("\n")
    return instruction, extra


def _largest_count(instruction: str) -> int:
    """The largest number in the instruction ("list 5 ...", "ten tips"), 0 if none."""
    values = [int(m) if m.isdigit() else _NUMBER_WORDS[m] for m in _NUMBER.findall(instruction)]
    return max(values, default=0)


def _hand_row(text: str) -> list[float]:
    instruction, extra = split_prompt(text)
    lower = instruction.lower()
    count = _largest_count(lower)
    word_count = _WORD_COUNT.search(lower)
    row = [
        len(instruction),
        len(instruction.split()),
        len(extra),
        len(extra.split()),
        float(bool(extra)),
        extra.count("\n"),
        instruction.count(","),
        float(instruction.rstrip().endswith("?")),
        np.log1p(count),
        float(0 < count <= 50),
        np.log1p(int(word_count.group(1))) if word_count else 0.0,
        float(bool(re.search(r"[{};=]|\bdef\b|\breturn\b", extra))),  # the input is code
    ]
    row += [float(k in lower) for k in _KEYWORDS]
    assert len(row) == NUM_HAND_FEATURES
    return row


def hand_features(texts: Sequence[str]) -> np.ndarray:
    """One row of NUM_HAND_FEATURES numbers per prompt."""
    return np.array([_hand_row(t) for t in texts], dtype=np.float64).reshape(len(texts), NUM_HAND_FEATURES)


class PromptVectorizer:
    """TF-IDF of the instruction (word 1-3-grams, char 2-5-grams) and of the input
    (words, down-weighted: the instruction decides the answer's kind)."""

    _BLOCKS = ("words", "chars", "inputs")

    def __init__(self, max_char_features: int = 100_000, input_weight: float = 0.5) -> None:
        self.max_char_features = max_char_features
        self.input_weight = input_weight
        self.blocks: dict[str, Tfidf] = {}

    def fit(self, texts: Sequence[str]) -> PromptVectorizer:
        instructions, extras = zip(*map(split_prompt, texts), strict=True)
        inputs = [e for e in extras if e.strip()] or ["none"]  # so that a vocabulary exists
        # Rare n-grams are noise on real data, but a tiny training set has no common ones.
        min_df = 1 if len(texts) < 100 else 2
        chars = {"analyzer": "char_wb", "ngram_range": (2, 5), "max_features": self.max_char_features}
        fitted = {
            "words": _tfidf(ngram_range=(1, 3), min_df=min_df).fit(instructions),
            "chars": _tfidf(min_df=min_df + 1, **chars).fit(instructions),
            "inputs": _tfidf(min_df=1 if len(inputs) < 100 else 3, max_features=20_000).fit(inputs),
        }
        self.blocks = {name: Tfidf.from_sklearn(v) for name, v in fitted.items()}
        return self

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        if len(texts) == 0:
            raise ValueError("no texts to featurize")
        if not self.blocks:
            raise ValueError("the prompt vectorizer is not fitted")
        instructions, extras = zip(*map(split_prompt, texts), strict=True)
        parts = [
            (self.blocks["words"], instructions, 1.0),
            (self.blocks["chars"], instructions, 1.0),
            (self.blocks["inputs"], extras, self.input_weight),
        ]
        rows, columns, values = [], [], []
        offset = 0
        for block, docs, weight in parts:  # side by side: block k's columns after block k-1's
            r, c, v = block.entries(docs)
            rows.append(r)
            columns.append(c + offset)
            values.append(v * np.float32(weight))
            offset += len(block.idf)
        matrix = sparse.csr_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))), shape=(len(texts), offset)
        )
        return matrix

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"vectorizer.input_weight": np.array([self.input_weight])}
        for name, block in self.blocks.items():
            terms = sorted(block.vocabulary, key=block.vocabulary.__getitem__)
            arrays[f"vectorizer.{name}.terms"] = np.array(terms, dtype=np.str_)
            arrays[f"vectorizer.{name}.idf"] = block.idf
            arrays[f"vectorizer.{name}.settings"] = np.array(json.dumps(block.settings))
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> PromptVectorizer:
        vectorizer = cls(input_weight=float(arrays["vectorizer.input_weight"][0]))
        for name in cls._BLOCKS:
            terms = arrays[f"vectorizer.{name}.terms"].tolist()
            settings = json.loads(str(arrays[f"vectorizer.{name}.settings"]))
            vocabulary = {term: i for i, term in enumerate(terms)}
            if len(vocabulary) != len(terms):
                raise ValueError(f"the {name!r} vocabulary repeats a term")
            vectorizer.blocks[name] = Tfidf(settings, vocabulary, arrays[f"vectorizer.{name}.idf"])
        return vectorizer


def _tfidf(**options: object) -> TfidfVectorizer:
    return TfidfVectorizer(sublinear_tf=True, dtype=np.float32, **options)
