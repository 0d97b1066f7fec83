"""EDA (Wei & Zou 2019): synonym replacement, random insertion, random swap, random deletion.

Each augmented copy of a text gets ONE operation (as the paper's code does); operation j changes
n = max(1, int(alpha_j * words)) words. Synonyms come from WordNet over all parts of speech (no POS tagger is
installable offline), stopwords (scikit-learn's list) are never replaced nor used as a source of insertions.
Swap and deletion are nlpaug's RandomWordAug (note: its swap exchanges ADJACENT words, a milder version of the
paper's swap of two random positions); synonym replacement and random insertion are written here on NLTK's
WordNet because nlpaug's SynonymAug needs a POS tagger and nlpaug has no random insertion.

Texts are whitespace-tokenised (prep already normalised whitespace), punctuation stays glued to its word and is
kept when the word is replaced; fields joined by FIELD_SEP are augmented one by one and rejoined, so the separator
survives. Every (source id, copy) pair seeds its own RNG: results do not depend on row order, chunking or workers.
"""
from __future__ import annotations

import hashlib
import random
import re
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from .text import FIELD_SEP

OPS = ("sr", "ri", "rs", "rd")
JOIN = f" {FIELD_SEP} "
# a token = leading punctuation, a word (letters, inner ' or -), trailing punctuation: "(great," -> ( great ,
WORD = re.compile(r"^(\W*)([A-Za-z](?:[A-Za-z'-]*[A-Za-z])?)(\W*)$")

ADJ_MARKER = re.compile(r"\([^()]*\)$")  # WordNet's syntactic marker on adjectives: "galore(ip)"
_SYNONYMS: dict[str, tuple[str, ...]] = {}  # memo per process: word -> its WordNet synonyms
_LEMMA_NAMES: dict[tuple[str, int], tuple[str, ...]] = {}
_STOPWORDS: frozenset[str] = frozenset()
_NLPAUG: dict = {}


def stopwords() -> frozenset[str]:
    global _STOPWORDS
    if not _STOPWORDS:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
        _STOPWORDS = frozenset(ENGLISH_STOP_WORDS)
    return _STOPWORDS


def lemma_name_table() -> dict[tuple[str, int], tuple[str, ...]]:
    """(WordNet data file, synset offset) -> the synset's lemma names, read once from WordNet's data files.

    NLTK's wordnet.synsets() parses each synset's gloss and pointers too: ~0.2 ms a synset, 70% of EDA's time on
    20news. Reading the names alone takes ~1 s for all 117,659 synsets, and the names are NLTK's own (the trailing
    adjective marker such as "(a)" removed); tests pin synonyms() to the wordnet.synsets() result.
    """
    if not _LEMMA_NAMES:
        from nltk.corpus import wordnet
        for kind in set(wordnet._FILEMAP.values()):
            with open(wordnet.abspath(f"data.{kind}"), encoding="utf-8") as fh:
                for line in fh:
                    if line[:1].isspace():  # the licence header
                        continue
                    offset, _lexfile, _pos, n_words, rest = line.split(" ", 4)  # then (word lex_id)*, ...
                    n = 2 * int(n_words, 16)
                    names = rest.split(" ", n)[:n:2]
                    _LEMMA_NAMES[kind, int(offset)] = tuple(ADJ_MARKER.sub("", w) if w[-1] == ")" else w
                                                            for w in names)
    return _LEMMA_NAMES


def synonyms(word: str) -> tuple[str, ...]:
    """WordNet synsets of a lowercase word over every part of speech -> their lemma names, in wordnet.synsets()'s
    order (its own morphy and index), without the word itself."""
    found = _SYNONYMS.get(word)
    if found is None:
        from nltk.corpus import wordnet
        from nltk.corpus.reader.wordnet import POS_LIST
        table, index, files = lemma_name_table(), wordnet._lemma_pos_offset_map, wordnet._FILEMAP
        names = (name.replace("_", " ").lower() for pos in POS_LIST for form in wordnet._morphy(word, pos)
                 for offset in index[form].get(pos, ()) for name in table[files[pos], offset])
        found = _SYNONYMS[word] = tuple(n for n in dict.fromkeys(names) if n != word)
    return found


def _match_case(src: str, new: str) -> str:
    if src.isupper() and len(src) > 1:
        return new.upper()
    return new[:1].upper() + new[1:] if src[:1].isupper() else new


def _candidates(tokens: list[str]) -> dict[str, list[int]]:
    """Lowercase non-stopword word -> positions of the tokens that hold it."""
    stop, out = stopwords(), {}
    for i, tok in enumerate(tokens):
        m = WORD.match(tok)
        if m and m[2].lower() not in stop:
            out.setdefault(m[2].lower(), []).append(i)
    return out


def synonym_replacement(tokens: list[str], n: int, rng: random.Random) -> list[str]:
    """Replace n distinct non-stopwords (every occurrence, as the paper) by a random synonym each."""
    out, words = list(tokens), _candidates(tokens)
    order = sorted(words)
    rng.shuffle(order)
    replaced = 0
    for word in order:
        syns = synonyms(word)
        if not syns:
            continue
        new = rng.choice(syns)
        for i in words[word]:
            pre, core, post = WORD.match(out[i]).groups()
            out[i] = pre + _match_case(core, new) + post
        replaced += 1
        if replaced >= n:
            break
    return out


def random_insertion(tokens: list[str], n: int, rng: random.Random) -> list[str]:
    """n times: a synonym of a random non-stopword is inserted at a random position (10 tries per insertion)."""
    out, words = list(tokens), sorted(_candidates(tokens))
    if not words:
        return out
    for _ in range(n):
        for _try in range(10):
            syns = synonyms(rng.choice(words))
            if syns:
                out.insert(rng.randrange(len(out) + 1), rng.choice(syns))
                break
    return out


def _nlpaug(action: str):
    """nlpaug's RandomWordAug for swap / delete on whitespace tokens, count = ceil(alpha * words) set per call."""
    if action not in _NLPAUG:
        from nlpaug.augmenter.word import RandomWordAug  # 7-11 s: it imports torch
        _NLPAUG[action] = RandomWordAug(action=action, aug_min=1, aug_max=None, tokenizer=str.split,
                                        reverse_tokenizer=" ".join)
    return _NLPAUG[action]


def _random_word_op(action: str, text: str, n: int, n_words: int, seed: int) -> str:
    aug = _nlpaug(action)
    aug.aug_p = (n - 0.5) / n_words  # ceil(aug_p * words) == n, the paper's count, safe from rounding
    random.seed(seed)  # nlpaug draws from the global RNG
    return getattr(aug, action)(text)


def apply_op(op: str, text: str, alpha: float, seed: int) -> str:
    """One EDA operation on one field (no FIELD_SEP inside)."""
    tokens = text.split()
    if not tokens:
        return text
    n = max(1, int(alpha * len(tokens)))
    if op in ("rs", "rd"):
        return _random_word_op("swap" if op == "rs" else "delete", " ".join(tokens), n, len(tokens), seed)
    rng = random.Random(seed)
    fn = synonym_replacement if op == "sr" else random_insertion
    return " ".join(fn(tokens, n, rng))


def row_seed(seed: int, src_id: str, copy: int) -> int:
    digest = hashlib.blake2b(f"{seed}\0{src_id}\0{copy}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def augment_text(text: str, src_id: str, cfg) -> list[tuple[str, str]]:
    """cfg.n_aug (op, augmented text) pairs for one text; ops cycle through a per-row random order."""
    alphas = {"sr": cfg.alpha_sr, "ri": cfg.alpha_ri, "rs": cfg.alpha_rs, "rd": cfg.alpha_rd}
    ops = [op for op in OPS if alphas[op] > 0]
    if not ops or not text.strip():
        return []
    order = random.Random(row_seed(cfg.seed, src_id, -1)).sample(ops, len(ops))
    out = []
    for copy in range(cfg.n_aug):
        op, seed = order[copy % len(ops)], row_seed(cfg.seed, src_id, copy)
        fields = [apply_op(op, f.strip(), alphas[op], seed + i) for i, f in enumerate(text.split(FIELD_SEP))]
        out.append((op, JOIN.join(fields)))
    return out


def _augment_chunk(args) -> list[tuple[int, str, str]]:
    ids, texts, cfg, start = args
    return [(start + i, op, aug) for i, (sid, text) in enumerate(zip(ids, texts))
            for op, aug in augment_text(text, sid, cfg)]


def warm_up() -> None:
    """Load WordNet's index and lemma names, the stopwords and nlpaug once, before worker processes fork (they share
    them, and never read WordNet's files themselves)."""
    from nltk.corpus import wordnet
    wordnet.ensure_loaded()
    lemma_name_table(), stopwords(), _nlpaug("swap"), _nlpaug("delete")


def augment_texts(ids: list[str], texts: list[str], cfg, workers: int = 2,
                  chunk: int = 1000) -> list[tuple[int, str, str]]:
    """(source row position, op, augmented text) for every copy of every text, in source order."""
    warm_up()
    jobs = [(ids[i:i + chunk], texts[i:i + chunk], cfg, i) for i in range(0, len(texts), chunk)]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers, get_context("fork")) as pool:
            parts = list(pool.map(_augment_chunk, jobs))
    else:
        parts = [_augment_chunk(job) for job in jobs]
    return [row for part in parts for row in part]
