"""fsspec helpers shared by the data modules: open a URL, join names, write whole files atomically.

A URL is a local path, a `file://` URL or any fsspec URL (`s3://bucket/prefix`). Credentials and
endpoints travel as fsspec `storage_options`, e.g. for S3
`{"key": ..., "secret": ..., "client_kwargs": {"endpoint_url": ...}}`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Optional

import fsspec
from fsspec.implementations.local import LocalFileSystem

StorageOptions = Optional[dict[str, Any]]

ROOT_ENV = "UL_STORAGE_ROOT"  # artifact root: a local folder or s3://bucket/prefix
RUNS_ENV = "UL_RUNS_DIR"  # local folder for checkpoints and evaluation outputs
DEFAULT_ROOT = "artifacts"


def is_remote_url(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def artifact_root(root: Optional[str] = None) -> str:
    """The absolute artifact root (`root`, else $UL_STORAGE_ROOT, else ./artifacts), no trailing slash."""
    root = root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT
    if is_remote_url(root):
        return root.rstrip("/")
    return str(Path(root.removeprefix("file://")).expanduser().resolve())


def runs_folder(runs: Optional[str] = None, root: Optional[str] = None) -> Path:
    """The absolute local runs folder: `runs`, else $UL_RUNS_DIR, else {root}/runs (./artifacts/runs if remote)."""
    runs = runs or os.environ.get(RUNS_ENV)
    if runs is None:
        root_url = artifact_root(root)
        runs = str(Path(DEFAULT_ROOT) / "runs") if is_remote_url(root_url) else str(Path(root_url) / "runs")
    return Path(runs).expanduser().resolve()


def url_to_fs(url: str, storage_options: StorageOptions = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a URL, with `storage_options` passed to fsspec."""
    return fsspec.core.url_to_fs(str(url), **(storage_options or {}))


# the storage options that are credentials, and the variables that carry them between processes
CREDENTIAL_ENV = {"key": "AWS_ACCESS_KEY_ID", "secret": "AWS_SECRET_ACCESS_KEY", "token": "AWS_SESSION_TOKEN"}


def s3_options_from_env(endpoint_url: Optional[str] = None) -> StorageOptions:
    """fsspec S3 options from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and an endpoint (argument,
    else $UL_S3_ENDPOINT_URL); None when nothing is set (the default AWS credential chain)."""
    options: dict[str, Any] = {}
    key, secret = os.environ.get(CREDENTIAL_ENV["key"]), os.environ.get(CREDENTIAL_ENV["secret"])
    if key and secret:
        options.update(key=key, secret=secret)
    endpoint = endpoint_url or os.environ.get("UL_S3_ENDPOINT_URL")
    if endpoint:  # MinIO/rclone-style servers need path-style addressing (buckets are not DNS names)
        options.update(client_kwargs={"endpoint_url": endpoint}, config_kwargs={"s3": {"addressing_style": "path"}})
    return options or None


def credentials_by_name(options: StorageOptions) -> tuple[StorageOptions, dict[str, str]]:
    """(options safe to write to a file, the environment that carries the credentials they leave out).

    Each credential option (CREDENTIAL_ENV) becomes `{"env": NAME}`; `credentials_from_env` puts the
    value of $NAME back in the process that reads the file.
    """
    if not options:
        return options, {}
    named = {k: ({"env": CREDENTIAL_ENV[k]} if k in CREDENTIAL_ENV else v) for k, v in options.items()}
    return named, {CREDENTIAL_ENV[k]: str(v) for k, v in options.items() if k in CREDENTIAL_ENV}


def credentials_from_env(options: StorageOptions, where: str) -> StorageOptions:
    """Options read from a file with each `{"env": NAME}` replaced by $NAME; a missing one names NAME and `where`."""
    if not options:
        return options
    out = dict(options)
    for k, v in options.items():
        if isinstance(v, dict) and set(v) == {"env"}:
            if v["env"] not in os.environ:
                raise RuntimeError(f"{where}: storage option {k!r} comes from ${v['env']}, which is not set "
                                   "in this process's environment")
            out[k] = os.environ[v["env"]]
    return out


def join_url(url: str, *names: str) -> str:
    """`url/name/...` without doubled slashes (works for local paths and fsspec URLs)."""
    return "/".join([str(url).rstrip("/"), *(n.strip("/") for n in names)])


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def write_file_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Call `write(f)` on a fresh temporary sibling of the local `path`, make it durable, rename it over `path`.

    The temporary name is unique per write (pid + random), so concurrent writers never share one;
    the file is fsynced before the rename and the folder after it, so a power loss leaves the old
    file or the new one, never a renamed but empty one. A failed write removes its temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable; best effort (some network filesystems refuse a folder's fsync)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write `data` to `path` so a crash never leaves a partial file under the final name.

    Local: `write_file_atomic` (a unique temporary sibling, fsynced, then renamed). Object stores
    (S3): a single PUT is atomic already; the object appears only once the upload completes.
    """
    if is_local(fs):
        write_file_atomic(path, lambda f: f.write(data))
    else:
        fs.pipe_file(path, data)


# -- fork safety -------------------------------------------------------------------------------
# A forked child (a DataLoader worker) inherits the parent's s3fs clients. fsspec drops them after
# the fork; when the child's garbage collector then runs inside the child's own event loop, the
# clients' `close_session` finalizer closes their connections, and closing unregisters the sockets
# from the epoll instance the child shares with the parent: the parent's next S3 request on such a
# pooled connection waits for a reply it is never told about (~16 s, then a retry). So: keep the
# clients alive across the fork and disarm their finalizers in the child (the child opens its own
# clients; the inherited ones stay inert). tests/test_data_shards.py holds the regression test.
_inherited_clients: list = []


def _session_closers() -> list[weakref.finalize]:
    registry = getattr(weakref.finalize, "_registry", {})  # CPython's table of live finalizers
    return [f for f, info in list(registry.items()) if getattr(info.func, "__name__", "") == "close_session"]


def _before_fork() -> None:
    _inherited_clients[:] = [p[0] for p in (f.peek() for f in _session_closers()) if p is not None]


def _after_fork_in_child() -> None:
    for f in _session_closers():
        f.detach()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_inherited_clients.clear,
                        after_in_child=_after_fork_in_child)


class ArtifactBusy(RuntimeError):
    """Another process is writing this artifact (a run folder, a shard set, a latent store)."""


@contextlib.contextmanager
def exclusive_lock(lock_path: str | os.PathLike, what: str, busy: type[ArtifactBusy] = ArtifactBusy,
                   doing: str = "writing it") -> Iterator[Path]:
    """Hold an exclusive, non-blocking flock on `lock_path` for the `with` block; ArtifactBusy (naming
    `what` and the holder's pid and host) at once when another process holds it. The kernel drops
    the lock when its process ends however it ends, so a crash never leaves a stale lock."""
    path = Path(lock_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "an unknown process"
            raise busy(f"{what} is in use: {holder} is {doing} (lock {path}). Wait for it to finish, "
                       "or stop it; two writers would overwrite each other.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # the next holder writes its own pid; the empty file may stay
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def local_writer_lock(fs, path: str, what: str) -> Iterator[None]:
    """`exclusive_lock` on `.<name>.lock` beside a local artifact `<name>` (hidden, so globs over the
    artifacts never see it); nothing on object stores (one writer at a time there)."""
    if not is_local(fs):
        yield
        return
    parent, _, name = path.rstrip("/").rpartition("/")
    with exclusive_lock(f"{parent or '.'}/.{name}.lock", what):
        yield


@contextlib.contextmanager
def creation_lock(url: str, what: str, storage_options: StorageOptions = None, timeout_s: float = 24 * 3600,
                  log: Optional[Callable[[str], None]] = None) -> Iterator[None]:
    """Wait for, then hold, the right to create a shared artifact at `url` (a sweep's shard set, a
    reference-feature cache): the caller looks for a finished one inside the block and creates it
    only when there is none, so concurrent runs make it once and the others reuse it. Local: a
    flock on `.<name>.create.lock` beside it (seen by every host that shares the filesystem).
    Object stores have no locks: a flock on this host, keyed by the URL (`$UL_LOCK_DIR`, else
    ~/.cache/ul-pipeline/locks), excludes runs on one machine; runs on several hosts may each write
    the same content, and readers still never see a partial artifact (its marker is written last)."""
    fs, path = url_to_fs(url, storage_options)
    if is_local(fs):
        parent, _, name = path.rstrip("/").rpartition("/")
        lock = Path(f"{parent or '.'}/.{name}.create.lock")
    else:
        import hashlib

        folder = Path(os.environ.get("UL_LOCK_DIR") or Path.home() / ".cache" / "ul-pipeline" / "locks")
        lock = folder / f"{hashlib.sha256(url.encode()).hexdigest()[:24]}.create.lock"
    deadline, told = time.monotonic() + timeout_s, False
    with contextlib.ExitStack() as stack:
        while True:
            try:
                stack.enter_context(exclusive_lock(lock, what, doing="creating it"))
                break
            except ArtifactBusy as busy:
                if time.monotonic() > deadline:
                    raise ArtifactBusy(f"{busy} Waited {timeout_s:.0f} s.") from None
                if log is not None and not told:
                    log(f"waiting: {busy}")
                    told = True
                time.sleep(0.5)
        yield
