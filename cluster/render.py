"""Fills a cluster config's settings from the environment, for `ray up` and friends.

    export WSL_RAY_AMI=ami-0123456789abcdef0 WSL_RAY_DATA=s3://my-bucket/datasets
    python cluster/render.py cluster/cluster.yaml && ray up cluster/rendered/cluster.yaml

Ray's launcher reads YAML as it is, so settings that differ per user (the AMI of your region,
where the datasets are) are written `${WSL_RAY_NAME}` or `${WSL_RAY_NAME:-default}` in
the configs. This script substitutes them, writes `cluster/rendered/<config>` and prints
its path; a setting without a default that is not set stops it with a message (exit 2).
Only `${WSL_RAY_...}` is replaced: the shell's own `$VARS` in commands are left alone.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

SETTING = re.compile(r"\$\{(WSL_RAY_[A-Z0-9_]+)(?::-([^}]*))?\}")
HELP = {
    "WSL_RAY_AMI": "the AMI id of your region for the nodes: an Ubuntu 22.04 image with NVIDIA "
    "drivers and Docker, e.g. the 'Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)' "
    "(Ray's default AMI is Ubuntu 18.04, too old for the Ray image)",
    "WSL_RAY_GCP_PROJECT": "your GCP project id",
    "WSL_RAY_HEAD_IP": "the address of the head machine",
    "WSL_RAY_WORKER_IPS": "the worker machines' addresses, e.g. [10.0.0.11, 10.0.0.12]",
    "WSL_RAY_SSH_USER": "the user that logs in over SSH",
}


class RenderError(ValueError):
    """A setting the config needs is not set in the environment."""


def render(text: str, env: dict[str, str], where: str = "config") -> str:
    """`text` with every ${WSL_RAY_X} or ${WSL_RAY_X:-default} replaced from `env`."""
    missing = sorted(
        {
            m.group(1)
            for m in SETTING.finditer(text)
            if m.group(2) is None and not env.get(m.group(1))
        }
    )
    if missing:
        lines = [
            f"  export {name}=...   # {HELP.get(name, 'see the comments')}" for name in missing
        ]
        raise RenderError(f"{where} needs these settings in the environment:\n" + "\n".join(lines))
    return SETTING.sub(lambda m: env.get(m.group(1)) or m.group(2) or "", text)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python cluster/render.py cluster/CONFIG.yaml", file=sys.stderr)
        return 2
    source = Path(argv[0])
    try:
        text = render(source.read_text(), dict(os.environ), str(source))
    except (OSError, RenderError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(__file__).resolve().parent / "rendered" / source.name
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
