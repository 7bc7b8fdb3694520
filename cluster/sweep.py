"""Entry for `ray submit CLUSTER.yaml cluster/sweep.py -- --space wmse --storage s3://...`.

`ray submit` uploads this file to the head node and runs it there; it connects to the
running cluster and runs `python -m wsl_ray.tune` with the same flags. Use a storage that
every node reaches (s3://, gs://, or a shared file system) so trials can move between nodes.
"""

import os
import sys

from wsl_ray.tune import main

if __name__ == "__main__":
    os.environ.setdefault("RAY_ADDRESS", "auto")  # the cluster this head node belongs to
    sys.exit(main(sys.argv[1:]))
