"""Content stamps: Make judges a file by its bytes, not by its modification time.

Reads  FILE (with --refresh: each FILE and every file a stamp in DIR records)
Writes STAMP (JSON: path, sha256, size, mtime_ns, since_ns) when its record is out of date, and sets the stamp's own
       modification time to `since_ns`: the moment FILE's content last changed
Run    python -m foldstack.stamp FILE STAMP      (a stamp rule's recipe: FILE was just built, or is newer than STAMP)
       python -m foldstack.stamp --refresh DIR [--dry] ARTEFACT... --sources SOURCE...   (the Makefile, once per run,
       before Make compares any times: every stamp in DIR and every named file's; prints the artefacts left newer
       than their unchanged stamps)
       python -m foldstack.stamp --shadow DIR   (under `make -n`: copies DIR to a temporary folder, prints its path)
       ... --refresh DIR [...] --list FILE WORD...   (also writes FILE from the words when they change, and stamps it:
       build/members.txt, the models that exist, because Make cannot see a prerequisite that disappeared)

Rules depend on .stamps/<file>.sha instead of <file>. Make compares a target's time with its stamps' times, and a
stamp's time only moves when its file's bytes change, so:
  same size and time as recorded   nothing is read (one stat)
  new time, same bytes             the record is refreshed; the stamp keeps `since` (nothing re-runs)
  new bytes                        since = now: everything built from FILE re-runs
  no stamp yet                     since = FILE's own time: a freshly built FILE, or a workspace built before stamps
                                   existed, does not look newer than what was built from it
  FILE missing                     nothing (under `make -n` it is still to be built by an earlier line of the plan)
A workspace copied or restored without its times (cp -r) keeps working too: every stamp is put back to its `since`
and every artefact (never a source: user data may be read-only) to its recorded time. Make re-reads a target's time
after its recipe, so a stamp left at its old time rebuilds nothing downstream. The refresh also runs under `make -n`
(it is part of reading the Makefile), on a shadow copy of the stamps outside the workspace (--shadow, --dry): a dry
run judges files as a real one would and writes nothing in the workspace.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path


def sha256(path) -> str:
    """A file's SHA-256, read in 1 MiB blocks. (Here, not in foldstack.io: every `make` run imports this module,
    which must stay free of numpy and pandas to start fast.)"""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_stamp(stamp: Path) -> dict | None:
    try:
        record = json.loads(stamp.read_text())
    except (OSError, ValueError):  # missing, or cut short: hash again
        return None
    return record if isinstance(record, dict) and "since_ns" in record else None


def write_text(path: Path, text: str, time_ns: int | None = None) -> None:
    """Write-then-rename (a reader never sees half a file), the file's times set to time_ns if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    if time_ns is not None:
        os.utime(tmp, ns=(time_ns, time_ns))
    os.replace(tmp, path)


def write_stamp(stamp: Path, record: dict) -> None:
    """The stamp, its times set to record['since_ns']."""
    write_text(stamp, json.dumps(record) + "\n", record["since_ns"])


def update(path: Path, stamp: Path, artefact: bool = False, dry: bool = False) -> str:
    """Bring `stamp` up to date with `path`; returns what happened: missing | same | touched | changed | new.
    An artefact found with the same bytes and another time (copied, restored) gets its recorded time back
    ("restored"), except in a dry run (`make -n` changes nothing of the workspace; it reports the artefact as
    touched); a source (user data, perhaps read-only) is never modified."""
    if not path.exists():
        return "missing"
    st = path.stat()
    old = read_stamp(stamp)
    if old and old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
        if stamp.stat().st_mtime_ns != old["since_ns"]:  # the stamp itself was copied or touched
            os.utime(stamp, ns=(old["since_ns"], old["since_ns"]))
        return "same"
    record = {"path": str(path), "sha256": sha256(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if old and old.get("sha256") == record["sha256"]:
        if artefact and not dry:
            os.utime(path, ns=(old["mtime_ns"], old["mtime_ns"]))
            update(path, stamp)  # now "same": the stamp goes back to its since as well
            return "restored"
        write_stamp(stamp, {**record, "since_ns": old["since_ns"]})
        return "touched"
    write_stamp(stamp, {**record, "since_ns": time.time_ns() if old else st.st_mtime_ns})
    return "changed" if old else "new"


def stamp_path(folder: Path, path: str) -> Path:
    """The Makefile's name for a file's stamp: $(call S,file) = .stamps/<path with / as ~>.sha."""
    return Path(folder) / (path.replace("/", "~") + ".sha")


def shadow(folder: Path) -> Path:
    """A copy of the stamp folder outside the workspace (times kept), for `make -n`: the dry run's refresh writes
    there, so a dry run writes nothing in the workspace, yet judges every file as a real run would."""
    import shutil
    import tempfile
    key = hashlib.sha256(str(Path.cwd().resolve()).encode()).hexdigest()[:16]
    dest = Path(tempfile.gettempdir()) / f"foldstack-dry-{key}"
    shutil.rmtree(dest, ignore_errors=True)
    if Path(folder).is_dir():
        shutil.copytree(folder, dest)  # copy2: the stamps keep their times, which are what Make compares
    else:
        dest.mkdir(parents=True)
    return dest


def update_list(folder: Path, path: str, words: list[str], dry: bool = False) -> str:
    """A file no rule builds, written from words the Makefile knows (build/members.txt: the models that exist), so
    that a word that disappears changes a stamp. Written when its text changes, then stamped like a source; a new
    file gets time 0 (no change known: a workspace built before the list existed rebuilds nothing). A dry run writes
    only the (shadow) stamp, as the real run would leave it."""
    file, stamp, text = Path(path), stamp_path(folder, path), " ".join(sorted(words)) + "\n"
    current = file.read_text() if file.exists() else None
    if not dry:
        if current != text:
            write_text(file, text, 0 if current is None else None)
        return update(file, stamp)
    old, sha = read_stamp(stamp), hashlib.sha256(text.encode()).hexdigest()
    if old and old.get("sha256") == sha:
        os.utime(stamp, ns=(old["since_ns"], old["since_ns"]))
        return "same"
    since = time.time_ns() if old or current not in (None, text) else file.stat().st_mtime_ns if current else 0
    write_stamp(stamp, {"path": path, "sha256": sha, "size": len(text.encode()), "mtime_ns": -1, "since_ns": since})
    return "changed"


def refresh(folder: Path, artefacts: list[str], sources: list[str] = (), dry: bool = False,
            lists: dict[str, list[str]] | None = None) -> list[str]:
    """update() every named file's stamp and every other stamp in `folder` (as sources), update_list() each list;
    returns the artefacts left newer than their unchanged stamps (a rule rebuilt them with identical bytes)."""
    lists = lists or {}
    for path, words in lists.items():
        update_list(folder, path, words, dry)
    stamps = {stamp_path(folder, p): (p, False) for p in sources}
    stamps.update({stamp_path(folder, p): (p, True) for p in artefacts})
    skip = {stamp_path(folder, p) for p in lists}
    for stamp in Path(folder).glob("*.sha") if Path(folder).is_dir() else ():
        if stamp in skip:
            continue
        record = read_stamp(stamp)
        if record and "path" in record and "since_ns" in record:
            stamps.setdefault(stamp, (record["path"], False))
    touched = []
    for stamp, (path, artefact) in sorted(stamps.items()):
        outcome = update(Path(path), stamp, artefact, dry)
        if artefact and outcome != "missing" and Path(path).stat().st_mtime_ns > stamp.stat().st_mtime_ns:
            touched.append(path)
    return touched


def main(argv=None) -> None:
    args = sys.argv[1:] if argv is None else argv
    dry = "--dry" in args
    args = [a for a in args if a != "--dry"]
    lists = {}
    if "--list" in args:  # --list FILE WORD... comes last
        cut = args.index("--list")
        if cut + 1 >= len(args):
            sys.exit("usage: --list FILE [WORD...]")
        lists, args = {args[cut + 1]: args[cut + 2:]}, args[:cut]
    if len(args) == 2 and args[0] == "--shadow":
        print(shadow(Path(args[1])))
    elif len(args) >= 2 and args[0] == "--refresh":
        names = args[2:]
        cut = names.index("--sources") if "--sources" in names else len(names)
        print(" ".join(refresh(Path(args[1]), names[:cut], names[cut + 1:], dry, lists)))
    elif len(args) == 2:
        update(Path(args[0]), Path(args[1]))
    else:
        sys.exit("usage: python -m foldstack.stamp FILE STAMP | --refresh DIR [--list FILE WORD...]")


if __name__ == "__main__":
    main()
