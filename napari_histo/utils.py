"""Small shared helpers: resource lookup, atomic writes, device choice, errors."""

from __future__ import annotations

import contextlib
import math
import os
import stat
import tempfile
from collections.abc import Iterator
from importlib import resources as _resources
from pathlib import Path
from typing import IO

# Lazy imports: torch is imported inside the functions that use it (directly or through the
# modules named there): importing this module stays light for the CLI and the napari manifest.


class HistoError(Exception):
    """A user-facing error: the message names the file and the problem, no traceback needed."""


class InputFileError(HistoError, ValueError):
    """A file that cannot be read: missing, empty, truncated, or in an unsupported format."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def check_input_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` as a readable, non-empty regular file, else :class:`InputFileError` with the
    reason: missing, a broken or looping link, a directory, a named pipe (FIFO), a device or a
    socket (opening those could block forever or read without end), unreadable, or empty."""
    import errno

    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        reason = "broken symbolic link" if os.path.islink(path) else "file not found"
        raise InputFileError(path, reason) from None
    except PermissionError:
        raise InputFileError(path, "permission denied") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputFileError(path, "symbolic link loop") from None
        raise InputFileError(path, f"cannot access ({exc.strerror or exc})") from None
    kinds = ((stat.S_ISDIR, f"is a directory, expected a {what}"), (stat.S_ISFIFO, "is a named pipe (FIFO), not a regular file"),
             (stat.S_ISCHR, "is a device, not a regular file"), (stat.S_ISBLK, "is a device, not a regular file"),
             (stat.S_ISSOCK, "is a socket, not a regular file"))
    for test, reason in kinds:
        if test(st.st_mode):
            raise InputFileError(path, reason)
    if not os.access(path, os.R_OK):
        raise InputFileError(path, "permission denied")
    if st.st_size == 0:
        raise InputFileError(path, "file is empty (0 bytes)")
    return path


def positive_float(value: object) -> float | None:
    """``value`` (a number or numeric text read from a file) as a finite positive float, else None."""
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    return number


def env_limit(name: str, default: float) -> float:
    """A configurable safety limit: ``NAPARI_HISTO_<name>`` from the environment, else ``default``."""
    value = os.environ.get(f"NAPARI_HISTO_{name}")
    try:
        return float(value) if value else float(default)
    except ValueError:
        return float(default)


def _default_file_mode() -> int:
    """Permissions a plain ``open(path, "w")`` would give (0o666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def resource_path(*parts: str) -> Path:
    """Absolute path of a file shipped in ``resources/`` (``napari_histo.resources``)."""
    root = Path(str(_resources.files("napari_histo.resources")))
    return root.joinpath(*parts)


def sample_slide_path() -> Path:
    """The CC0 CMU-1-Small-Region Aperio slide shipped with the package."""
    return resource_path("sample", "cmu-1-small-region.svs")


#: Environment variable overriding the per-user data folder (tests, shared machines).
DATA_DIR_ENV = "NAPARI_HISTO_DATA_DIR"


def user_data_dir(*parts: str) -> Path:
    """Per-user folder for what the viewer writes when the user did not choose a place (created).

    ``$NAPARI_HISTO_DATA_DIR`` when set, else the platform's user data folder for "napari-histo"
    (``platformdirs.user_data_dir``: ``~/.local/share/napari-histo`` on Linux,
    ``~/Library/Application Support/napari-histo`` on macOS, ``%LOCALAPPDATA%\\napari-histo`` on
    Windows). Never inside the installed package.
    """
    base = os.environ.get(DATA_DIR_ENV)
    if not base:
        import platformdirs

        base = platformdirs.user_data_dir("napari-histo", appauthor=False)
    folder = Path(base).joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def inside_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies inside the installed napari_histo package or its shipped resources
    (never a place to write; the resources may be a link out of the package in a source checkout)."""
    target = Path(path).resolve()
    roots = {Path(__file__).resolve().parent, resource_path().resolve()}
    return any(target == root or root in target.parents for root in roots)


def writable_folder_for(path: str | os.PathLike | None) -> Path | None:
    """The folder of ``path`` when a user would expect outputs there: it exists, is writable and is
    not inside the installed package; else None."""
    if not path:
        return None
    folder = Path(path).resolve().parent
    if not folder.is_dir() or inside_package(folder) or not os.access(folder, os.W_OK):
        return None
    return folder


def _replace_target(path: str | os.PathLike) -> tuple[Path, int]:
    """(the file a write to ``path`` replaces, the permissions the new file gets).

    A symbolic link stays a link: its target is rewritten. An existing file keeps its
    permissions (a read-only session stays read-only). A file with other hard links is refused,
    since renaming a new file into place would silently split them.
    """
    target = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target, _default_file_mode()
    if not stat.S_ISREG(st.st_mode):
        raise InputFileError(target, "is not a regular file; refusing to replace it")
    if st.st_nlink > 1:
        raise InputFileError(target, f"has {st.st_nlink} hard links; replacing it would break them "
                                     "(write to another file, or copy it first)")
    return target, stat.S_IMODE(st.st_mode)


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` with the file named (a full disk while writing says which file)."""
    if exc.filename is not None:
        return exc
    return type(exc)(exc.errno, exc.strerror or str(exc), str(path))


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Write ``path`` through a temporary sibling renamed into place on success.

    An interrupted or failed write leaves the previous file (or nothing) behind, never a
    partial file that looks complete. Symbolic links, permissions and hard links of an existing
    file are respected (:func:`_replace_target`); an error names the file.
    """
    path, file_mode = _replace_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        try:
            with open(tmp, mode, **open_kwargs) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, file_mode)  # mkstemp makes 0600 files; results must stay shareable
            os.replace(tmp, path)
        except OSError as exc:
            raise _named(exc, path) from exc
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path for writers that want a filename; rename on success
    (links and permissions respected as in :func:`atomic_write`)."""
    path, file_mode = _replace_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    try:
        try:
            yield Path(tmp)
            if os.path.isfile(tmp):
                os.chmod(tmp, file_mode)
            os.replace(tmp, path)
        except OSError as exc:
            raise _named(exc, path) from exc
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def choose_device(requested: str | None = None) -> str:
    """Pick the torch device: the request if given, else cuda > mps > cpu."""
    import torch

    if requested and requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise HistoError(f"device {requested!r} requested but CUDA is not available")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
