"""Back-translation (English -> pivot -> English) behind one interface, two engines, in resumable chunks.

Engines take a list of single-line segments and return exactly as many back-translated lines:
- `apertium` (offline default): Debian's rule-based apertium, `apertium -u eng-spa | apertium -u spa-eng_US`, ONE
  pipe per batch (each call costs ~0.5 s of start-up); output lines are counted against input lines, and a batch
  that comes back misaligned is bisected until every line is accounted for, or fails loudly.
- `marian`: any Hugging Face translation pair (Hub id or local directory), AutoModelForSeq2SeqLM, length-sorted
  batches, on a GPU when present.

Texts are cut into segments before translation: fields (FIELD_SEP), paragraphs (newlines), sentences, and
sentences longer than `max_chars` into word chunks; the translated segments are put back in the same structure.
A segment never holds a line break, so one segment is one line of the pipe.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pandas as pd

from .io import save_parquet
from .text import FIELD_SEP

APERTIUM_HINT = "apt-get install apertium apertium-eng-spa"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+")  # spaces after . ! ? (and a closing quote)
# characters that some tools take for line breaks: a segment must stay one line
BREAKS = re.compile(r"[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029\x00]")


class AlignmentError(RuntimeError):
    """An engine returned a different number of lines than it was given."""


class EngineMissing(RuntimeError):
    """The engine cannot run here; the message is one line saying how to fix it."""


# ---- segmenting ----------------------------------------------------------------------------------------------

def split_long(sentence: str, max_chars: int) -> list[str]:
    """Cut a sentence longer than max_chars at word boundaries (a single longer word stays whole)."""
    out, cur = [], ""
    for word in sentence.split():
        if cur and len(cur) + 1 + len(word) > max_chars:
            out.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    return out + [cur] if cur else out


def sentences(paragraph: str, max_chars: int) -> list[str]:
    """A paragraph (no newline) -> its sentences, each at most max_chars (save single overlong words)."""
    paragraph = BREAKS.sub(" ", paragraph)
    out = []
    for s in SENTENCE_END.split(paragraph.strip()):
        out += split_long(s, max_chars) if len(s) > max_chars else ([s.strip()] if s.strip() else [])
    return out


def plan(text: str, max_chars: int) -> list[list[list[str]]]:
    """text -> fields -> paragraphs -> segments."""
    return [[sentences(p, max_chars) for p in field.split("\n")] for field in text.split(FIELD_SEP)]


def rejoin(structure: list[list[list[str]]]) -> str:
    return f" {FIELD_SEP} ".join("\n".join(" ".join(p) for p in field) for field in structure)


def backtranslate_texts(texts: list[str], engine, max_chars: int) -> list[str]:
    """Back-translate whole texts: segment, translate every distinct segment once, rebuild each text."""
    plans = [plan(t, max_chars) for t in texts]
    unique = list(dict.fromkeys(s for p in plans for field in p for para in field for s in para))
    translated = dict(zip(unique, engine.backtranslate(unique))) if unique else {}
    return [rejoin([[[translated[s] for s in para] for para in field] for field in p]) for p in plans]


# ---- engines -------------------------------------------------------------------------------------------------

class Apertium:
    """en -> pivot -> en through one shell-free pipe of apertium processes per batch."""
    name = "apertium"

    def __init__(self, modes: tuple[str, ...] = ("eng-spa", "spa-eng_US"), commands: list[list[str]] | None = None):
        # `commands` replaces the apertium processes (tests use it to fake misbehaving engines)
        self.commands = commands or [["apertium", "-u", mode] for mode in modes]
        if commands is None:
            check_apertium(modes)

    def pipe(self, lines: list[str]) -> list[str]:
        """One pass of the pipe; AlignmentError unless exactly one output line per input line."""
        data = "".join(BREAKS.sub(" ", line) + "\n" for line in lines).encode()
        procs, stdin, errs = [], subprocess.PIPE, []
        for cmd in self.commands:
            errs.append(tempfile.TemporaryFile())  # a file, not a pipe: a chatty stderr cannot block
            procs.append(subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=errs[-1]))
            if stdin is not subprocess.PIPE:
                stdin.close()  # the new process holds it now
            stdin = procs[-1].stdout
        out = _feed_and_read(procs[0], procs[-1], data)
        codes = [p.wait() for p in procs]
        msgs = [(e.seek(0), e.read().decode(errors="replace").strip(), e.close())[1] for e in errs]
        if any(codes):
            raise RuntimeError(f"{' | '.join(map(' '.join, self.commands))} failed: "
                               f"{'; '.join(filter(None, msgs)) or f'exit codes {codes}'}")
        result = out.decode(errors="replace").split("\n")
        if result and result[-1] == "":
            result.pop()
        if len(result) != len(lines):
            raise AlignmentError(f"{len(lines)} lines in, {len(result)} lines out")
        return [r.strip() for r in result]

    def backtranslate(self, lines: list[str]) -> list[str]:
        try:
            return self.pipe(lines)
        except AlignmentError as err:
            if len(lines) == 1:
                raise AlignmentError(f"apertium misaligned on one line ({err}): {lines[0][:200]!r}") from None
            print(f"backtrans: {err} in a batch of {len(lines)}; bisecting it", file=sys.stderr)
            half = len(lines) // 2
            return self.backtranslate(lines[:half]) + self.backtranslate(lines[half:])


def _feed_and_read(first, last, data: bytes) -> bytes:
    """Write `data` to the first process while reading the last one's output (no pipe deadlock)."""
    def feed():
        for step in (lambda: first.stdin.write(data), first.stdin.close):
            try:
                step()
            except BrokenPipeError:  # the engine died early; its exit code says why
                pass
    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out = last.stdout.read()
    writer.join()
    return out


def check_apertium(modes) -> None:
    """EngineMissing (one line, how to install) unless apertium and its modes are installed."""
    if shutil.which("apertium") is None:
        raise EngineMissing(f"back-translation engine apertium is not installed: {APERTIUM_HINT}")
    listed = subprocess.run(["apertium", "-l"], capture_output=True, text=True).stdout.split()
    missing = [m for m in modes if m not in listed]
    if missing:
        raise EngineMissing(f"apertium lacks the mode(s) {', '.join(missing)}: {APERTIUM_HINT}")


class Marian:
    """en -> pivot -> en with two seq2seq translation models (Hub ids or local dirs), batched, GPU if present."""
    name = "marian"

    def __init__(self, forward: str, back: str, batch_size: int = 16, max_length: int = 256, num_beams: int = 1,
                 device: str | None = None):
        import torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.models = [self._load(name) for name in (forward, back)]
        self.batch_size, self.max_length, self.num_beams = batch_size, max_length, num_beams

    def _load(self, name: str):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
            model = AutoModelForSeq2SeqLM.from_pretrained(name).to(self.device).eval()
        except (OSError, ValueError, ImportError) as err:
            raise EngineMissing(f"marian model {name!r} cannot be loaded ({str(err).splitlines()[0][:160]}); name a "
                                f"local directory, or allow the Hub; opus-mt tokenizers need `pip install "
                                f"sentencepiece`") from None
        return tokenizer, model

    def translate(self, lines: list[str], tokenizer, model) -> list[str]:
        import torch
        order = sorted(range(len(lines)), key=lambda i: len(lines[i]))  # similar lengths share a batch
        out = [""] * len(lines)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = tokenizer([lines[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                              max_length=self.max_length).to(self.device)
            with torch.inference_mode():
                gen = model.generate(**batch, max_new_tokens=self.max_length, num_beams=self.num_beams)
            for i, text in zip(idx, tokenizer.batch_decode(gen, skip_special_tokens=True)):
                out[i] = text.strip()
        return out

    def backtranslate(self, lines: list[str]) -> list[str]:
        for tokenizer, model in self.models:
            lines = [BREAKS.sub(" ", line) for line in self.translate(lines, tokenizer, model)]
        return lines


def make_engine(cfg):
    """The engine a Backtrans config names (raises EngineMissing with a one-line fix)."""
    if cfg.engine == "apertium":
        return Apertium(tuple(cfg.apertium_modes))
    return Marian(cfg.marian_forward, cfg.marian_back, cfg.batch_size, cfg.max_length, cfg.num_beams)


# ---- chunks that survive an interruption ---------------------------------------------------------------------

def run_chunks(ids: list[str], texts: list[str], make, parts: Path, key: str, chunk_size: int,
               max_chars: int) -> pd.DataFrame:
    """Back-translate in chunks of `chunk_size` texts, each saved to parts/<i>-<key>.parquet as it finishes.

    A rerun with the same key skips finished chunks; `make()` builds the engine only when a chunk needs it.
    Returns src_id, text (the back-translation) for every input text, in input order.
    """
    parts.mkdir(parents=True, exist_ok=True)
    engine, frames = None, []
    n_chunks = (len(texts) + chunk_size - 1) // chunk_size
    for c in range(n_chunks):
        path = parts / f"{c:05d}-{key}.parquet"
        if not path.exists():
            engine = engine or make()
            lo, hi = c * chunk_size, min(len(texts), (c + 1) * chunk_size)
            out = backtranslate_texts(texts[lo:hi], engine, max_chars)
            save_parquet(path, pd.DataFrame({"src_id": ids[lo:hi], "text": out}))
            print(f"backtrans: chunk {c + 1}/{n_chunks} done ({hi - lo} texts)", flush=True)
        frames.append(pd.read_parquet(path))
    done = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"src_id": [], "text": []})
    if done["src_id"].tolist() != list(ids):
        raise RuntimeError(f"{parts}: the finished chunks do not match the input rows; delete the folder and rerun")
    return done
