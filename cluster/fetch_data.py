"""Setup step of the cluster configs: copy the datasets to this node.

    python cluster/fetch_data.py SOURCE DEST

SOURCE is the config's WSL_RAY_DATA setting: s3://bucket/path, gs://bucket/path or a folder
(for example on NFS); empty means no dataset files (the embedded `shapes` needs none).
A failed copy exits 1 with a message, which stops the node's setup.
"""

import sys

import pyarrow.fs


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python cluster/fetch_data.py SOURCE DEST", file=sys.stderr)
        return 2
    source, dest = argv
    if not source:
        print("wsl-ray setup: WSL_RAY_DATA is not set, no datasets copied")
        return 0
    try:
        pyarrow.fs.LocalFileSystem().create_dir(dest, recursive=True)
        pyarrow.fs.copy_files(source, dest, use_threads=True)
    except (OSError, ValueError) as err:
        print(
            f"wsl-ray setup: copying the datasets from {source} to {dest} failed: {err}",
            file=sys.stderr,
        )
        return 1
    print(f"wsl-ray setup: datasets copied from {source} to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
