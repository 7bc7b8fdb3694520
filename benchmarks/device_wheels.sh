#!/usr/bin/env bash
# Builds, in the git-ignored folder OUT_DIR (default gpu_wheels/), every wheel a sweep needs
# that the GPU machine's image lacks, for its Python 3.12 on x86-64:
#
#   benchmarks/device_wheels.sh [OUT_DIR]      # 2-3 minutes; downloads 86 MB from PyPI
#
# 1. pip resolves ray[default,tune,train]==$RAY_VERSION and optuna==$OPTUNA_VERSION for
#    cp312 manylinux (a dry run: only metadata is fetched);
# 2. of the resolved set it keeps what the image lacks (IMAGE below) and what a sweep loads
#    (LEAVE_OUT below), and downloads those wheels (--no-deps, one version each);
# 3. Ray's wheel is rewritten without its Java worker and JavaScript source maps
#    (benchmarks/strip_wheel.py: 79 MB -> 46 MB, RECORD rewritten, so a valid wheel);
# 4. it prints each wheel's size and what a call that carries OUT_DIR sends in all (the
#    checkout's tracked and untracked files, OUT_DIR, gpu_ref/ if present) against the device
#    tool's 64 MiB, and fails if that is over.
#
# On the GPU machine benchmarks/gpu_check.sh --call 2 installs them with
#   python3 -m pip install --no-index --no-deps --target /tmp/site gpu_wheels/*.whl
# and runs with PYTHONPATH=/tmp/site. Ray's dashboard is part of the set (ray[default]):
# wsl_ray.utils.ray_start.init_ray starts it for Ray Train's placement-group cleaner.
# PYTHON names the interpreter whose pip downloads (default: python); RAY_VERSION and
# OPTUNA_VERSION the versions (default: those this checkout is tested with).
set -euo pipefail
usage="usage: benchmarks/device_wheels.sh [OUT_DIR]   (--help: what it builds and why)"
case ${1:-} in
    -h | --help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "$usage" >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "$usage" >&2; exit 2; }
cd "$(dirname "$0")/.."
OUT=${1:-gpu_wheels}
PY=${PYTHON:-python}
RAY_VERSION=${RAY_VERSION:-2.60.0}
OPTUNA_VERSION=${OPTUNA_VERSION:-5.1.0}
CARRY_LIMIT=$((64 * 1024 * 1024))
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
    --platform manylinux1_x86_64)

# Of the resolved set, the distributions the image already has (its package list, read on
# 2026-11-17; /work/.library/device/KINDS.md). A name missing here is carried: safe, larger.
IMAGE="aiohappyeyeballs aiohttp aiosignal attrs certifi charset-normalizer click filelock
frozenlist fsspec grpcio idna markupsafe msgpack multidict numpy packaging pandas
prometheus-client propcache protobuf pyarrow python-dateutil pyyaml requests six tqdm
typing-extensions urllib3 wrapt yarl"
# Resolved but not loaded by a sweep (tests/test_device_wheels.py runs the sweep with their
# modules made unimportable): virtualenv and its own needs (Ray's runtime_env for pip and
# uv environments), py-spy (an executable: the dashboard's stack-trace button), SQLAlchemy,
# Alembic and Mako (Optuna's RDB storage, imported lazily; wsl_ray uses the journal file),
# cryptography, cffi and pycparser (google-auth's x509 credentials, imported lazily).
# Together about 19.5 MB: with them the set is over the 64 MiB a call carries.
LEAVE_OUT="virtualenv distlib platformdirs python-discovery py-spy sqlalchemy alembic mako
cryptography cffi pycparser"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip install -q --dry-run --ignore-installed "${TARGET[@]}" --target "$WORK/t" \
    --report "$WORK/report.json" "ray[default,tune,train]==$RAY_VERSION" \
    "optuna==$OPTUNA_VERSION"
IMAGE=$IMAGE LEAVE_OUT=$LEAVE_OUT "$PY" - "$WORK/report.json" > "$WORK/wanted.txt" <<'EOF'
import json, os, re, sys

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

have, leave = set(os.environ["IMAGE"].split()), set(os.environ["LEAVE_OUT"].split())
for item in json.load(open(sys.argv[1]))["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    why = "in the image" if norm(name) in have else "left out" if norm(name) in leave else ""
    print(f"{name}=={version}" if not why else f"# {name}=={version}: {why}")
EOF
grep '^#' "$WORK/wanted.txt" | sed 's/^# /not carried: /' >&2
"$PY" -m pip download -q --no-deps "${TARGET[@]}" -d "$WORK/dl" -r <(grep -v '^#' "$WORK/wanted.txt")

rm -rf "$OUT"
mkdir -p "$OUT"
for wheel in "$WORK"/dl/*.whl; do
    case $(basename "$wheel") in
        ray-*) PYTHONPATH=$PWD "$PY" -m benchmarks.strip_wheel "$wheel" "$OUT" ;;
        *) mv "$wheel" "$OUT/" ;;
    esac
done

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
bytes() { du -scb "$@" 2>/dev/null | tail -1 | cut -f1; }
echo "$OUT/: $(find "$OUT" -name '*.whl' | wc -l) wheels"
for wheel in "$OUT"/*.whl; do
    echo "  $(basename "$wheel"): $(mib "$(stat -c %s "$wheel")")"
done
code=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null |
    tail -1 | cut -f1)
wheels=$(bytes "$OUT")
ref=0
[ -d gpu_ref ] && ref=$(bytes gpu_ref)
total=$((code + wheels + ref))
echo "a call carrying $OUT/ and gpu_ref/ sends $(mib "$total") of $(mib $CARRY_LIMIT):" \
    "the checkout $(mib "$code"), $OUT/ $(mib "$wheels"), gpu_ref/ $(mib "$ref")"
if [ "$total" -gt "$CARRY_LIMIT" ]; then
    echo "error: over the device tool's 64 MiB a call" >&2
    exit 1
fi
