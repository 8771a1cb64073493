"""Output folders and files: where a command may write, and how every file is written.

The rule, for every command that writes a folder (``pretrain``, ``finetune``, ``stability``,
``probe``, ``prepare``, ``corpus``, ``demo``) and for ``save_pretrained``:

* a folder that does not exist is created (with the usual permissions, as ``mkdir`` gives);
* an existing folder is written into only when minibert made it for the same kind of output (it
  holds the marker file ``.minibert.json`` naming the kind) or it is empty;
* anything else (a folder holding other files, another command's output, a file) is refused, in one
  line that names the folder and the option that allows it. ``--overwrite`` allows it and still
  replaces only files minibert writes (the marker lists them); other files there are never touched.

Every check runs before the work starts, so a refused command has changed nothing.

Every file is written atomically (``write_file``): into a temporary sibling, flushed to disk, then
renamed over the target, so a crash leaves the previous version or the new one, never half of one.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

MARKER = ".minibert.json"


# How a refusal names what a folder holds, by the kind in its marker.
KIND_NAMES = {"pretrain": "a run of `minibert pretrain`", "checkpoint": "a checkpoint of `minibert "
              "pretrain`", "model": "a model saved by save_pretrained"}


def kind_name(kind: str) -> str:
    return KIND_NAMES.get(kind, f"the output of `minibert {kind}`")


class OutputRefused(ValueError):
    """A command would write where it must not; the message names the folder and the way out."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def normal_permissions(path, directory: bool) -> None:
    """Give ``path`` the permissions ``mkdir`` / ``open`` would: ``tempfile`` makes 0700 folders and
    0600 files, and a renamed temporary keeps them, which would hide a checkpoint from the user's
    group."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def write_file(path, data: bytes | str | Callable[[Path], None]) -> Path:
    """Write ``path`` atomically. ``data`` is the content, or a function that writes a given path
    (for writers that want a file name, such as ``np.savez`` or ``savefig``; the temporary keeps the
    suffix, which picks the format)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "a folder is in the way of a file to write", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix, dir=path.parent)
    tmp = Path(name)
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        normal_permissions(tmp, directory=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def sha256_file(path) -> str:
    """The sha256 of a file's bytes, read in blocks of 1 MiB (shards and weights can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- the marker -------------------------------------------------------------------------------
def read_marker(folder) -> dict | None:
    """The marker of a folder minibert wrote, or None (absent, or not a marker we can read)."""
    file = Path(folder) / MARKER
    try:
        marker = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("kind"), str) else None


def marker_content(folder, kind: str, files=(), **fields) -> dict:
    """The marker ``folder`` should hold after writing ``files`` (names inside it): the old one's
    file list and fields, updated."""
    old = read_marker(folder) or {}
    listed = sorted(set(old.get("files", [])) | set(files))
    return {**old, **fields, "kind": old.get("kind", kind), "files": listed,
            "written_at": time.time()}


def write_marker(folder, kind: str, files=(), **fields) -> dict:
    marker = marker_content(folder, kind, files, **fields)
    write_file(Path(folder) / MARKER, json.dumps(marker, indent=1, sort_keys=True) + "\n")
    return marker


def our_files(folder) -> set[str]:
    """Names of the files minibert wrote in ``folder`` (those its marker lists, and the marker)."""
    marker = read_marker(folder)
    return set(marker.get("files", [])) | {MARKER} if marker else set()


# ---- the rule ---------------------------------------------------------------------------------
def claim(folder, kind: str, *, overwrite: bool = False, option: str = "--out",
          allow: str = "add --overwrite", kinds: tuple[str, ...] = (),
          recognise: Callable[[Path], bool] | None = None, mark: bool = True) -> Path:
    """Check that ``folder`` may receive output of ``kind`` and mark it; refuse in one line if not.

    ``option`` and ``allow`` word the refusal (``--out`` / ``add --overwrite`` for a command, the
    argument and ``pass overwrite=True`` for a function). ``kinds``: other kinds this output may
    share a folder with (a model saved into a fine-tuning folder). ``recognise(folder)``: True for a
    folder an older minibert made for this output before folders had markers, so existing runs stay
    usable. ``mark=False`` leaves the marking to the caller (``mark_folder``), after checks of its
    own, so that a command refused by those leaves an existing folder as it was.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputRefused(f"{option} {folder} is a file, not a folder; give a folder path")
    if folder.is_dir():
        marker = read_marker(folder)
        other_kind = marker is not None and marker["kind"] != kind and marker["kind"] not in kinds
        if other_kind and not overwrite:
            raise OutputRefused(f"{option} {folder} holds {kind_name(marker['kind'])}; choose "
                                f"another folder, or {allow} to write into it anyway")
        foreign = marker is None and any(folder.iterdir()) and not (recognise and recognise(folder))
        if foreign and not overwrite:
            raise OutputRefused(f"{option} {folder} is not empty and was not made by minibert "
                                f"{kind}; choose a new folder, or {allow} to write into it (only "
                                f"minibert's own files are replaced)")
    folder.mkdir(parents=True, exist_ok=True)
    if mark:
        mark_folder(folder, kind, kinds)
    return folder


def mark_folder(folder, kind: str, kinds: tuple[str, ...] = ()) -> None:
    """Write ``folder``'s marker for ``kind`` (kept if it already names ``kind`` or one of
    ``kinds``)."""
    folder = Path(folder)
    marker = read_marker(folder)
    if marker is None:
        write_marker(folder, kind)
    elif marker["kind"] != kind and marker["kind"] not in kinds:    # --overwrite made it ours
        write_file(folder / MARKER, json.dumps({**marker, "kind": kind}, indent=1, sort_keys=True)
                   + "\n")


# ---- interruptions ----------------------------------------------------------------------------
class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM (``kill``, ``docker stop``, systemd, Slurm) ended a
    command; ``exit_code`` is the shell's convention, 128 + the signal number (130, 143)."""

    def __init__(self, signum: int = signal.SIGINT, message: str = ""):
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def raise_interrupted(signum, frame):
    raise Interrupted(signum)


class StopRequests:
    """``with StopRequests() as stop:`` turns the first SIGINT or SIGTERM into ``stop.signum``
    (checked by a loop between steps, which then saves and stops); a second one raises
    ``Interrupted`` at once.
    Outside the main thread signals cannot be caught, and this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
        return False

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""
