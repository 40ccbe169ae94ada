"""`memfs://` paths for Beam's filesystems, held in this process's memory: a stand-in for gs:// and s3:// that
shows the job reaches its output only through Beam's FileSystems (import this module to register it)."""

from __future__ import annotations

import io
import threading
import time

from apache_beam.io.filesystem import FileMetadata, FileSystem


class _Writer(io.BytesIO):
    def __init__(self, files: dict[str, bytes], path: str):
        super().__init__()
        self._files, self._path = files, path

    def close(self):
        if not self.closed:
            self._files[self._path] = self.getvalue()
        super().close()


class MemoryFileSystem(FileSystem):
    files: dict[str, bytes] = {}  # shared by every instance: Beam makes a new one per call

    @classmethod
    def scheme(cls) -> str:
        return "memfs"

    def join(self, base, *paths):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass

    def has_dirs(self):
        return False

    def _list(self, dir_or_prefix):
        for path, data in list(self.files.items()):
            if path.startswith(dir_or_prefix):
                yield FileMetadata(path, len(data), 0.0)

    def create(self, path, mime_type="application/octet-stream", compression_type=None):
        return _Writer(self.files, path)

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        return io.BytesIO(self.files[path])

    def copy(self, source_file_names, destination_file_names):
        for source, destination in zip(source_file_names, destination_file_names):
            self.files[destination] = self.files[source]

    def rename(self, source_file_names, destination_file_names):
        for source, destination in zip(source_file_names, destination_file_names):
            self.files[destination] = self.files.pop(source)

    def exists(self, path):
        return path in self.files or any(p.startswith(path.rstrip("/") + "/") for p in self.files)

    def size(self, path):
        return len(self.files[path])

    def last_updated(self, path):
        return 0.0

    def checksum(self, path):
        return str(len(self.files[path]))

    def metadata(self, path):
        return FileMetadata(path, len(self.files[path]), 0.0)

    def delete(self, paths):
        for path in paths:
            for name in [p for p in self.files if p == path or p.startswith(path.rstrip("/") + "/")]:
                del self.files[name]


class SlowMemoryFileSystem(MemoryFileSystem):
    """`slowmemfs://`: `memfs://` whose every read waits `OPEN_SECONDS` first, as an object store's does (Cloud
    Storage: tens of milliseconds); `most_at_once` is the most reads that were waiting together."""

    OPEN_SECONDS = 0.03
    most_at_once = 0
    _waiting = 0
    _lock = threading.Lock()

    @classmethod
    def scheme(cls) -> str:
        return "slowmemfs"

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        cls = SlowMemoryFileSystem
        with cls._lock:
            cls._waiting += 1
            cls.most_at_once = max(cls.most_at_once, cls._waiting)
        time.sleep(self.OPEN_SECONDS)
        with cls._lock:
            cls._waiting -= 1
        return super().open(path, mime_type, compression_type)
