"""A smaller copy of a wheel: files matching some patterns left out, and its RECORD rewritten.

A wheel is a zip file whose `NAME-VERSION.dist-info/RECORD` lists every other member as
`path,sha256=DIGEST,SIZE` (DIGEST: the urlsafe base64 of the SHA-256, without `=` padding; the
RECORD's own line is `path,,`). A copy that drops members must drop their lines too, or pip
and `importlib.metadata` list files that are not there. Here every kept member's line is
computed afresh from its bytes, so the copy's RECORD matches the copy exactly.

What the GPU machine's sweep leaves out of Ray's wheel by default: the Java worker
(`ray/jars/`, 32 MB of the 79 MB cp312 wheel, compressed; Python workers never load it) and
the dashboard's JavaScript source maps (`*.js.map`, 1.5 MB; a browser loads them only for its
developer tools): 45.6 MB are left.

    python -m benchmarks.strip_wheel WHEEL OUT_DIR   # writes OUT_DIR/<the same file name>
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import sys
import zipfile
from pathlib import Path

DROP = ("ray/jars/*", "*.js.map")


def record_line(path: str, data: bytes) -> str:
    """One RECORD line: `path,sha256=<urlsafe base64 of the digest, no padding>,<size>`."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def record_name(names: list[str]) -> str:
    """The path of the wheel's RECORD: the one `*.dist-info/RECORD` at the top level."""
    records = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/RECORD")]
    if len(records) != 1:
        raise ValueError(f"a wheel holds one top-level *.dist-info/RECORD; found {records}")
    return records[0]


def strip_wheel(wheel: Path, out_dir: Path, drop: tuple[str, ...] = DROP) -> Path:
    """Copies `wheel` to `out_dir` (same file name) without the members whose path matches a
    pattern of `drop` (fnmatch, where `*` also crosses `/`); returns the copy's path.

    Kept members are copied byte for byte with their zip metadata (dates, permissions: the
    Ray binaries stay executable); the RECORD is written last, one line per kept member."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / wheel.name
    if out.resolve() == wheel.resolve():
        raise ValueError(f"{wheel}: the copy would overwrite the wheel itself")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        record = record_name(src.namelist())
        lines = []
        for info in src.infolist():
            name = info.filename
            if name == record or any(fnmatch.fnmatch(name, p) for p in drop):
                continue
            data = src.read(info)
            dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
            if not name.endswith("/"):
                lines.append(record_line(name, data))
        lines.append(f"{record},,")
        dst.writestr(src.getinfo(record), "\n".join(lines) + "\n", zipfile.ZIP_DEFLATED)
    return out


def check_record(wheel: Path) -> list[str]:
    """What is wrong with a wheel's RECORD: members it lacks a right line for, lines for
    files it does not hold. An empty list: every member is listed with its true hash."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        record = record_name(names)
        listed = {}
        for line in zf.read(record).decode().splitlines():
            path, digest, size = line.rsplit(",", 2)
            listed[path] = (digest, size)
        problems = []
        for name in names:
            if name == record or name.endswith("/"):
                continue
            want = record_line(name, zf.read(name)).rsplit(",", 2)[1:]
            if listed.pop(name, None) != tuple(want):
                problems.append(f"{name}: no RECORD line with its sha256 and size")
        listed.pop(record, None)
        problems += [f"{path}: listed in RECORD but not in the wheel" for path in listed]
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] in ("-h", "--help"):
        print(__doc__.rstrip().splitlines()[-1].strip())
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    wheel, out_dir = Path(args[0]), Path(args[1])
    if wheel.suffix != ".whl" or not zipfile.is_zipfile(wheel):
        print(f"error: {wheel} is not a wheel (a .whl zip file)", file=sys.stderr)
        return 2
    out = strip_wheel(wheel, out_dir)
    mb = 1e6
    print(f"{out}: {wheel.stat().st_size / mb:.1f} MB -> {out.stat().st_size / mb:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
