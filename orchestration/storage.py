"""Ray storage: a local folder or an object store (``s3://``, ``gs://``), through a pyarrow filesystem.

Ray Tune writes each trial's checkpoints and logs to ``<storage>/<sweep name>/<trial folder>/``:
one experiment folder per sweep, reused by every launch of it. The storage is ``<output>/ray``
by default, or any URI given with ``--storage``:

- a local path (absolute, or relative to the current folder): ``pyarrow.fs.LocalFileSystem``;
- ``s3://bucket/prefix``: ``pyarrow.fs.S3FileSystem`` configured from the standard AWS
  environment: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (an S3-compatible server such as
  MinIO or Ceph; the scheme of the URL selects http or https), ``AWS_REGION`` or
  ``AWS_DEFAULT_REGION``; credentials come from the AWS SDK's default chain on each node
  (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, a profile, or the instance's role) and are
  never written into the filesystem object Ray sends to the workers;
- any other URI pyarrow knows (``gs://``, ``hdfs://``): ``pyarrow.fs.FileSystem.from_uri``.

Every node (the launch's and each trial's) builds the filesystem from its own environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from orchestration.errors import StorageError

__all__ = [
    "Storage",
    "StorageError",
    "checkpoint_folders",
    "delete_checkpoints",
    "delete_folder",
    "download",
    "is_uri",
    "open_storage",
    "s3_filesystem",
    "uri_of",
    "usage",
]

CHECKPOINT_PREFIX = "checkpoint_"
"""Ray Tune names a trial's checkpoint folders ``checkpoint_<index>``."""


def is_uri(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is a URI (``scheme://...``) rather than a local path; also true for a
    URI that went through ``pathlib.Path`` (which folds ``s3://b`` into ``s3:/b``)."""
    return "://" in str(location) or re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/", str(location)) is not None


def s3_filesystem() -> Any:
    """A ``pyarrow.fs.S3FileSystem`` for the endpoint and region of the AWS environment variables."""
    from pyarrow import fs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    options: dict[str, Any] = {}
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options.update(
            endpoint_override=parsed.netloc + parsed.path.rstrip("/"), scheme=parsed.scheme or "https"
        )
    if region:
        options["region"] = region
    return fs.S3FileSystem(**options)


@dataclass(frozen=True)
class Storage:
    """A storage location: its pyarrow filesystem and the path inside it.

    Attributes:
        uri: The location as the user wrote it, made absolute when local.
        filesystem: The pyarrow filesystem.
        path: The location inside ``filesystem`` (``bucket/prefix`` for S3, an absolute path locally).
    """

    uri: str
    filesystem: Any
    path: str

    @property
    def remote(self) -> bool:
        """Whether the location is an object store or other non-local filesystem."""
        return is_uri(self.uri) and not self.uri.startswith("file://")

    def join(self, *parts: str) -> str:
        """A path inside the filesystem below :attr:`path`."""
        return "/".join([self.path.rstrip("/"), *(p.strip("/") for p in parts)])

    def uri_of(self, path: str) -> str:
        """The URI of a path of this filesystem (what :func:`open_storage` opens again)."""
        return uri_of(self.filesystem, path)

    def ray_run_config(self) -> dict[str, Any]:
        """``storage_path`` and ``storage_filesystem`` for ``tune.RunConfig``."""
        return {"storage_path": self.path, "storage_filesystem": self.filesystem}


def open_storage(location: str | os.PathLike[str]) -> Storage:
    """The :class:`Storage` of a local path or URI.

    Raises:
        StorageError: An unsupported or malformed URI (names it).
    """
    text = str(location)
    if not is_uri(text) or text.startswith("file://"):
        from pyarrow import fs

        local = Path(text.removeprefix("file://")).expanduser().resolve()
        return Storage(str(local), fs.LocalFileSystem(), str(local))
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StorageError(f"{text}: an s3:// storage URI names a bucket (s3://BUCKET/PREFIX)")
        return Storage(text.rstrip("/"), s3_filesystem(), f"{parsed.netloc}{parsed.path}".rstrip("/"))
    from pyarrow import fs

    try:
        filesystem, path = fs.FileSystem.from_uri(text)
    except (ValueError, OSError) as err:
        raise StorageError(f"{text}: not a storage URI pyarrow can open ({err})") from None
    return Storage(text.rstrip("/"), filesystem, path.rstrip("/"))


def uri_of(filesystem: Any, path: str) -> str:
    """The URI of ``path`` in ``filesystem``: ``s3://...``, ``gs://...``, or the local path itself."""
    kind = getattr(filesystem, "type_name", "local")
    if kind == "local":
        return path
    scheme = {"gcs": "gs"}.get(kind, kind)
    return f"{scheme}://{path.lstrip('/')}"


def checkpoint_folders(filesystem: Any, trial_path: str) -> list[str]:
    """The ``checkpoint_*`` folders directly under a trial folder (none when it does not exist)."""
    from pyarrow import fs

    try:
        infos = filesystem.get_file_info(fs.FileSelector(trial_path, allow_not_found=True))
    except (OSError, ValueError):
        return []
    return sorted(
        info.path
        for info in infos
        if info.type == fs.FileType.Directory and info.base_name.startswith(CHECKPOINT_PREFIX)
    )


def delete_folder(filesystem: Any, path: str) -> bool:
    """Delete a folder and everything under it; False when there was none (or it cannot be removed)."""
    from pyarrow import fs

    try:
        if filesystem.get_file_info(path).type == fs.FileType.NotFound:
            return False
        filesystem.delete_dir(path)
    except (OSError, ValueError):
        return False
    return True


def delete_checkpoints(filesystem: Any, trial_path: str) -> int:
    """Delete every checkpoint folder of a trial folder; returns how many were deleted."""
    return sum(delete_folder(filesystem, path) for path in checkpoint_folders(filesystem, trial_path))


def download(uri: str, target: Path) -> Path:
    """Copy the folder at ``uri`` (a checkpoint) into the local folder ``target``.

    Raises:
        StorageError: Nothing readable there (names the URI).
    """
    from pyarrow import fs

    storage = open_storage(uri)
    try:
        if storage.filesystem.get_file_info(storage.path).type != fs.FileType.Directory:
            raise StorageError(f"{uri}: no such folder")
        target.mkdir(parents=True, exist_ok=True)
        fs.copy_files(
            storage.path,
            str(target),
            source_filesystem=storage.filesystem,
            destination_filesystem=fs.LocalFileSystem(),
        )
    except OSError as err:
        raise StorageError(f"{uri}: cannot be read ({str(err).splitlines()[0][:200]})") from None
    return target


def usage(location: str | os.PathLike[str], *, name_prefix: str = "") -> tuple[int, int]:
    """``(bytes, files)`` under a storage location; ``name_prefix`` counts only files inside folders
    whose name starts with it (``checkpoint_``: the checkpoints)."""
    from pyarrow import fs

    storage = open_storage(location)
    try:
        infos = storage.filesystem.get_file_info(
            fs.FileSelector(storage.path, recursive=True, allow_not_found=True)
        )
    except OSError:
        return 0, 0
    size = files = 0
    for info in infos:
        if info.type != fs.FileType.File:
            continue
        parts = info.path[len(storage.path) :].strip("/").split("/")[:-1]
        if name_prefix and not any(part.startswith(name_prefix) for part in parts):
            continue
        size += info.size or 0
        files += 1
    return size, files
