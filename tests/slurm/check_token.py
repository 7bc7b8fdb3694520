"""Token authentication of a running Slurm job's Ray, checked by tests/slurm/run_slurm_test.sh
while a trial is held:

    check_token.py TOKEN_FILE HELD_CLAIM DASHBOARD_ADDRESS

The job's token file is readable by its user only, the held Train worker runs with
RAY_AUTH_MODE=token and that file as RAY_AUTH_TOKEN_PATH, and the head's dashboard (whose
Jobs API runs any command) refuses a request without the token or with another one.
"""

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path


def status(url: str, headers: dict[str, str]) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def main(token_file: Path, claim: Path, dashboard: str) -> None:
    mode = token_file.stat().st_mode & 0o777
    assert mode == 0o600, f"{token_file}: mode {mode:o}"
    pid = json.loads(claim.read_text())["pid"]
    environ = Path(f"/proc/{pid}/environ").read_text().split("\0")
    env = dict(x.split("=", 1) for x in environ if "=" in x)
    assert env.get("RAY_AUTH_MODE") == "token", env.get("RAY_AUTH_MODE")
    assert env.get("RAY_AUTH_TOKEN_PATH") == str(token_file), env.get("RAY_AUTH_TOKEN_PATH")
    url = f"http://{dashboard}/api/jobs/"
    token = token_file.read_text()
    codes = tuple(
        status(url, headers)
        for headers in (
            {},
            {"Authorization": "Bearer " + "0" * 64},
            {"Authorization": f"Bearer {token}"},
        )
    )
    assert codes == (401, 403, 200), codes
    print(f"token auth: {token_file} mode 600, in the worker's environment; dashboard {codes}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
