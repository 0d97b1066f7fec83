"""Text normalisation and WordNet lemmatization as the recipe does it: lowercase, one space, lemmas.

Lemmatizing is memoised per unique token: a corpus has far fewer distinct tokens than tokens, so each distinct
token is looked up in WordNet once (split over the cores), then every text is rebuilt from the table.
"""
from __future__ import annotations

import re
from concurrent.futures import ProcessPoolExecutor

import numpy as np

FIELD_SEP = "\u241e"  # SYMBOL FOR RECORD SEPARATOR: never in real text, kept as one token by the lemmatizer
TOKEN = re.compile(r"\w+|[^\w\s]")
SPACE = re.compile(r"\s+")


def text_column(cfg) -> str:
    """The processed column holding a model's text variant (`text: raw | lemma` in its YAML)."""
    return "text_lemma" if cfg.text == "lemma" else "text"


def normalise(text: str) -> str:
    """Collapse every run of whitespace (newlines, tabs) to one space. Case is kept: cased encoders use it."""
    return SPACE.sub(" ", text).strip()


def _lemmatize_chunk(tokens: list[str]) -> list[str]:
    from nltk.stem import WordNetLemmatizer  # imported in the worker: loading WordNet is per process
    lemmatizer = WordNetLemmatizer()
    out = []
    for tok in tokens:
        # A noun lemma first ("mice" -> "mouse"); a token WordNet leaves alone may still be a verb form.
        lemma = lemmatizer.lemmatize(tok)
        out.append(lemma if lemma != tok else lemmatizer.lemmatize(tok, "v"))
    return out


def lemma_table(tokens: set[str], workers: int = 2) -> dict[str, str]:
    """token -> lemma for every distinct alphabetic token, computed on `workers` processes."""
    words = sorted(t for t in tokens if t.isalpha())
    if not words:
        return {}
    chunks = [list(c) for c in np.array_split(np.array(words, dtype=object), max(1, workers)) if len(c)]
    if workers > 1 and len(words) > 5000:
        with ProcessPoolExecutor(workers) as pool:
            lemmas = [lem for part in pool.map(_lemmatize_chunk, chunks) for lem in part]
    else:
        lemmas = _lemmatize_chunk(words)
    return dict(zip(words, lemmas))


def lemmatize_texts(texts: list[str], workers: int = 2) -> list[str]:
    """Texts -> lowercase texts of space-joined lemmas (punctuation kept as tokens)."""
    tokenized = [TOKEN.findall(t.lower()) for t in texts]
    table = lemma_table({tok for toks in tokenized for tok in toks}, workers)
    return [" ".join(table.get(tok, tok) for tok in toks) for toks in tokenized]


def join_text(df, columns: tuple[str, ...]) -> list[str]:
    """A table's text columns -> one normalised text per row, fields joined by FIELD_SEP (a missing cell: "")."""
    parts = [df[c].fillna("").map(normalise) for c in columns]
    return [f" {FIELD_SEP} ".join(p for p in row) for row in zip(*parts)]
