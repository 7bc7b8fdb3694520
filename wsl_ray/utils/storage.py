"""Files on the sweep's storage, a local path or a URI (s3://, gs://, ...), through pyarrow's
filesystems: read whole, written whole (atomically, for a local file)."""

from __future__ import annotations

import os

import pyarrow.fs


def filesystem(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The pyarrow filesystem and path of a local path or a URI (s3://, gs://, ...)."""
    if "://" in uri:
        return pyarrow.fs.FileSystem.from_uri(uri)
    return pyarrow.fs.LocalFileSystem(), str(uri)


def read_text(uri: str) -> str:
    """The text of a local file or a URI's object; FileNotFoundError when there is none."""
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def write_text(uri: str, text: str) -> None:
    """Writes `text` to a local file or a URI's object. A local file is written to
    `NAME.tmp<pid>` and renamed, so that a kill mid-write leaves the old file whole (object
    stores write an object at once)."""
    fs, path = filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        return
    with fs.open_output_stream(path) as f:
        f.write(text.encode())
