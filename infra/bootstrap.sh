#!/usr/bin/env bash
# awsrun bootstrap: make an Ubuntu host ready to run PyTorch training jobs.
#
#   bash bootstrap.sh --torch-spec torch==2.13.0+cpu \
#       --torch-index-url https://download.pytorch.org/whl/cpu
#
# Steps, in order: packages driver venv torch requirements verify
# Each step checks before it acts and, once done, writes a marker
# $STATE_DIR/STEP.done whose content is the step's inputs (a changed input
# redoes the step). A second run skips finished steps in seconds; a run that
# was cut off resumes where it stopped. Steps whose work is done never call sudo.
#
# Output protocol (stdout, one event per line; the awsrun client parses these):
#   ==> STEP start
#   ==> STEP skip <reason>
#   ==> STEP done <seconds>s
#   ==> STEP FAILED exit=<code> log=<path>   then the last 20 lines of that log
#   AWSRUN_REBOOT_REQUIRED                     driver installed: reboot, run again
#   AWSRUN_VERIFY torch=<ver> cuda=<True|False> devices=<n> name=<name>
#                                              name= runs to the end of the line
#   awsrun bootstrap <time> user=<u> pid=<pid> venv=<path> state=<dir>
#                                              first line of a run (pid: the script's own)
# Any other line is for humans and may change.
#
# Exit status: 0 ready, 100 reboot required, 2 usage error, 75 another run
# held the lock too long, otherwise the exit status of the failed step.
#
# Files: $STATE_DIR/logs/STEP.log (each step's full output, latest run) and
# $STATE_DIR/bootstrap.log (every run, appended). STATE_DIR defaults to
# ~/.awsrun/bootstrap.
#
# Environment: AWSRUN_ASSUME_GPU=1|0 overrides NVIDIA GPU detection (tests);
# AWSRUN_APT_WAIT seconds to wait for other apt/dpkg users (default 600);
# AWSRUN_LOCK_WAIT seconds to wait for a concurrent bootstrap (default 1800).

set -euo pipefail
umask 022

STEPS=(packages driver venv torch requirements verify)

usage() {
    cat <<'EOF'
usage: bootstrap.sh [options]
  --venv PATH               virtualenv to create/use (default ~/venvs/awsrun)
  --torch-spec SPEC         pip requirement for torch, e.g. torch==2.13.0+cu130
  --torch-index-url URL     extra package index for that build,
                            e.g. https://download.pytorch.org/whl/cu130
  --pip-args "ARGS"         extra pip options (split on spaces),
                            e.g. "--find-links /opt/wheels"
  --requirements FILE       pip install -r FILE (skipped if FILE does not exist)
  --driver-packages "PKGS"  apt packages of the NVIDIA driver (space or comma separated)
  --build-essential         also install build-essential
  --upgrade                 apt-get upgrade once (never done otherwise)
  --force-step STEP         redo STEP even if done (repeatable)
  --only STEP               run only STEP (repeatable)
  --state-dir DIR           markers and logs (default ~/.awsrun/bootstrap)
steps: packages driver venv torch requirements verify
EOF
}

die_usage() {
    echo "bootstrap.sh: $*" >&2
    usage >&2
    exit 2
}

is_step() {
    local s
    for s in "${STEPS[@]}"; do [ "$s" = "$1" ] && return 0; done
    return 1
}

VENV="$HOME/venvs/awsrun"
TORCH_SPEC=""
TORCH_INDEX_URL=""
PIP_ARGS=""
REQUIREMENTS=""
DRIVER_PACKAGES=""
BUILD_ESSENTIAL=0
UPGRADE=0
STATE_DIR="$HOME/.awsrun/bootstrap"
FORCE=()
ONLY=()

while [ $# -gt 0 ]; do
    case "$1" in
        --venv | --torch-spec | --torch-index-url | --pip-args | --requirements | \
            --driver-packages | --force-step | --only | --state-dir)
            [ $# -ge 2 ] || die_usage "$1 needs a value" ;;
    esac
    case "$1" in
        --venv) VENV=$2; shift ;;
        --torch-spec) TORCH_SPEC=$2; shift ;;
        --torch-index-url) TORCH_INDEX_URL=$2; shift ;;
        --pip-args) PIP_ARGS=$2; shift ;;
        --requirements) REQUIREMENTS=$2; shift ;;
        --driver-packages) DRIVER_PACKAGES=$2; shift ;;
        --build-essential) BUILD_ESSENTIAL=1 ;;
        --upgrade) UPGRADE=1 ;;
        --force-step) is_step "$2" || die_usage "unknown step '$2'"; FORCE+=("$2"); shift ;;
        --only) is_step "$2" || die_usage "unknown step '$2'"; ONLY+=("$2"); shift ;;
        --state-dir) STATE_DIR=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die_usage "unknown option '$1'" ;;
    esac
    shift
done

# "~/x" arrives unexpanded when quoted by a remote caller.
expand_path() {
    local p=${1/#\~/$HOME}
    case "$p" in /*) ;; *) p="$PWD/$p" ;; esac
    printf '%s\n' "$p"
}
VENV=$(expand_path "$VENV")
STATE_DIR=$(expand_path "$STATE_DIR")
[ -n "$REQUIREMENTS" ] && REQUIREMENTS=$(expand_path "$REQUIREMENTS")
DRIVER_PACKAGES=$(printf '%s' "$DRIVER_PACKAGES" | tr ',' ' ' | xargs)
PY="$VENV/bin/python"
LOG_DIR="$STATE_DIR/logs"
APT_WAIT=${AWSRUN_APT_WAIT:-600}

mkdir -p "$LOG_DIR"

# One run at a time: a second one (e.g. a client retry) waits for the first.
exec 9>"$STATE_DIR/lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
    echo "waiting for another bootstrap run to finish ($STATE_DIR/lock)"
    flock -w "${AWSRUN_LOCK_WAIT:-1800}" 9 || { echo "bootstrap: lock still held, giving up"; exit 75; }
fi

# Everything from here on is also appended to bootstrap.log. tee ignores
# INT/TERM so the last lines still get written when the run is interrupted.
exec > >(trap '' INT TERM; exec tee -a "$STATE_DIR/bootstrap.log") 2>&1
echo "awsrun bootstrap $(date -u +%Y-%m-%dT%H:%M:%SZ) user=$(id -un) pid=$$ venv=$VENV state=$STATE_DIR"

# ---------------------------------------------------------------- helpers

in_list() {
    local needle=$1 item
    shift
    for item in "$@"; do [ "$item" = "$needle" ] && return 0; done
    return 1
}
selected() { [ ${#ONLY[@]} -eq 0 ] || in_list "$1" "${ONLY[@]}"; }
forced() { [ ${#FORCE[@]} -gt 0 ] && in_list "$1" "${FORCE[@]}"; }

marker_path() { printf '%s/%s.done\n' "$STATE_DIR" "$1"; }
marker_matches() {
    local m
    m=$(marker_path "$1")
    [ -f "$m" ] && [ "$(cat "$m")" = "$2" ]
}
marker_differs() {
    local m
    m=$(marker_path "$1")
    [ -f "$m" ] && [ "$(cat "$m")" != "$2" ]
}
write_marker() {
    local m
    m=$(marker_path "$1")
    printf '%s\n' "$2" >"$m.tmp"
    mv -f "$m.tmp" "$m"
}

# Fails fast, with the reason, when we are neither root nor allowed 'sudo -n'.
require_root() {
    [ "$(id -u)" -eq 0 ] && return 0
    if ! command -v sudo >/dev/null 2>&1; then
        echo "root is needed to $1, but this user is not root and sudo is missing"
        return 1
    fi
    if ! sudo -n true 2>/dev/null; then
        echo "root is needed to $1, but 'sudo -n' is refused (a password is required?)"
        return 1
    fi
}

# Root commands: directly when root, else sudo that fails instead of prompting.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

apt_get() {
    as_root env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a \
        apt-get -y -q -o "DPkg::Lock::Timeout=$APT_WAIT" \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

# cloud-init runs apt at first boot; let it finish (bounded) before we start.
wait_for_apt() {
    if command -v cloud-init >/dev/null 2>&1; then
        echo "waiting for cloud-init (at most ${APT_WAIT}s)"
        timeout "$APT_WAIT" cloud-init status --wait >/dev/null 2>&1 || true
    fi
}

apt_update() {
    local i
    for i in 1 2 3 4 5; do
        apt_get update && return 0
        echo "apt-get update failed (try $i); retrying in 10s"
        sleep 10
    done
    return 1
}

missing_packages() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || printf '%s ' "$p"
    done
}

has_nvidia_gpu() {
    case "${AWSRUN_ASSUME_GPU:-}" in 1) return 0 ;; 0) return 1 ;; esac
    if command -v lspci >/dev/null 2>&1; then
        lspci -d 10de: 2>/dev/null | grep -qE 'VGA compatible controller|3D controller|Display controller'
        return
    fi
    # No pciutils: read PCI vendor/class from sysfs (0x03xxxx = display class).
    local d
    for d in /sys/bus/pci/devices/*; do
        [ "$(cat "$d/vendor" 2>/dev/null)" = 0x10de ] || continue
        case "$(cat "$d/class" 2>/dev/null)" in 0x03*) return 0 ;; esac
    done
    return 1
}

nvidia_smi_works() {
    command -v nvidia-smi >/dev/null 2>&1 && timeout 60 nvidia-smi -L 2>/dev/null | grep -q '^GPU '
}

boot_id() { cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown; }

pip_install() {
    local extra=() idx=()
    read -r -a extra <<<"$PIP_ARGS"
    [ -n "$TORCH_INDEX_URL" ] && idx=(--extra-index-url "$TORCH_INDEX_URL")
    "$PY" -m pip install --no-input --disable-pip-version-check --progress-bar off \
        ${idx[@]+"${idx[@]}"} ${extra[@]+"${extra[@]}"} "$@"
}

# Prints the installed torch version; exit 0 iff it is importable and satisfies $1.
torch_satisfies() {
    "$PY" - "$1" <<'EOF'
import sys
import importlib.metadata as md
spec = sys.argv[1]
try:
    dist = md.distribution("torch")
    installed = dist.version
    # pip writes RECORD last: without it the install was cut off.
    if not dist.read_text("RECORD"):
        raise RuntimeError("install incomplete (no RECORD)")
    import torch  # noqa: F401  (a half-installed torch does not count)
except Exception as exc:
    print(f"torch not importable: {exc}")
    sys.exit(1)
print(installed)
try:
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.version import Version
    ok = Requirement(spec).specifier.contains(Version(installed), prereleases=True)
except Exception:
    ok = spec.replace(" ", "") in (f"torch=={installed}", "torch")
sys.exit(0 if ok else 1)
EOF
}

# ------------------------------------------------------------------ steps
# check_STEP INPUTS: print a reason and return 0 when the step's work is done.
# do_STEP INPUTS: do the work (runs in a subshell with set -e; output -> log).

BASE_PACKAGES=(python3-venv python3-pip tmux rsync)
[ "$BUILD_ESSENTIAL" = 1 ] && BASE_PACKAGES+=(build-essential)

check_packages() {
    local missing
    if [ "$UPGRADE" = 1 ] && ! marker_matches packages "$1"; then return 1; fi
    missing=$(missing_packages "${BASE_PACKAGES[@]}")
    [ -z "$missing" ] && echo "all present (${BASE_PACKAGES[*]})"
}

do_packages() {
    local missing
    missing=$(missing_packages "${BASE_PACKAGES[@]}")
    echo "missing: ${missing:-none}; upgrade=$UPGRADE"
    require_root "install packages"
    wait_for_apt
    apt_update
    # shellcheck disable=SC2086
    [ -z "$missing" ] || apt_get install --no-install-recommends $missing
    if [ "$UPGRADE" = 1 ]; then apt_get upgrade; fi
}

check_driver() {
    if ! has_nvidia_gpu; then
        echo "no NVIDIA GPU on the PCI bus"
    elif nvidia_smi_works; then
        echo "nvidia-smi works (driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null |
            head -n1))"
    else
        return 1
    fi
}

do_driver() {
    local inputs=$1
    if [ -z "$DRIVER_PACKAGES" ]; then
        echo "an NVIDIA GPU is present, nvidia-smi does not work, and no --driver-packages were given"
        return 3
    fi
    if marker_matches driver "$inputs" && [ -f "$STATE_DIR/driver.bootid" ] && ! forced driver; then
        if [ "$(cat "$STATE_DIR/driver.bootid")" = "$(boot_id)" ]; then
            echo "driver packages were installed during this boot; a reboot is still pending"
            return 0
        fi
        echo "driver packages installed and the host rebooted, but nvidia-smi still fails:"
        nvidia-smi 2>&1 || true
        lsmod 2>/dev/null | grep -i nvidia || echo "(no nvidia kernel module loaded)"
        command -v dkms >/dev/null 2>&1 && dkms status 2>&1 || true
        return 4
    fi
    local pkgs headers
    # shellcheck disable=SC2206
    pkgs=($DRIVER_PACKAGES)
    require_root "install the NVIDIA driver"
    wait_for_apt
    apt_update
    # DKMS builds the module against the running kernel, which needs its headers.
    headers="linux-headers-$(uname -r)"
    if apt-cache show "$headers" >/dev/null 2>&1; then pkgs+=("$headers"); fi
    apt_get install "${pkgs[@]}"
    boot_id >"$STATE_DIR/driver.bootid"
}

check_venv() {
    [ ! -e "$VENV/.awsrun-incomplete" ] && "$PY" -c 'import pip' >/dev/null 2>&1 &&
        echo "$VENV works ($("$PY" -c 'import sys; print("Python %d.%d.%d" % sys.version_info[:3])'))"
}

do_venv() {
    # A run killed mid-creation leaves .awsrun-incomplete behind: start over.
    if [ -e "$VENV" ]; then
        if [ -e "$VENV/.awsrun-incomplete" ] || [ -e "$VENV/.awsrun-venv" ] || [ -z "$(ls -A "$VENV")" ]; then
            echo "removing incomplete or replaced venv $VENV"
            rm -rf "$VENV"
        else
            local aside
            aside="$VENV.broken.$(date +%s)"
            echo "moving unusable venv $VENV aside to $aside"
            mv "$VENV" "$aside"
        fi
    fi
    mkdir -p "$VENV"
    touch "$VENV/.awsrun-incomplete"
    /usr/bin/python3 -m venv "$VENV"
    "$PY" -c 'import pip'
    touch "$VENV/.awsrun-venv"
    rm -f "$VENV/.awsrun-incomplete"
    echo "created $VENV with $("$PY" --version 2>&1)"
}

check_torch() {
    local version
    marker_differs torch "$1" && return 1
    version=$(torch_satisfies "$TORCH_SPEC" 2>/dev/null) || return 1
    echo "torch $version satisfies $TORCH_SPEC"
}

do_torch() {
    # pip writes RECORD last (after byte-compiling): an install cut off before that leaves metadata
    # that makes pip say "already satisfied" and cannot be uninstalled. Drop it; pip installs over.
    local d
    for d in "$VENV"/lib/python3*/site-packages/torch-*.dist-info; do
        [ -d "$d" ] && [ ! -f "$d/RECORD" ] || continue
        echo "removing $d: an install that was cut off (no RECORD)"
        rm -rf "$d"
    done
    pip_install "$TORCH_SPEC"
    local version
    version=$(torch_satisfies "$TORCH_SPEC") || {
        echo "after pip install, torch ($version) still does not satisfy $TORCH_SPEC"
        return 5
    }
    echo "installed torch $version"
}

check_requirements() {
    marker_matches requirements "$1" && echo "$REQUIREMENTS unchanged since last install"
}

do_requirements() {
    local constraints=()
    # Keep the torch build chosen above; a requirement that needs another one fails here.
    if [ -n "$TORCH_SPEC" ]; then
        printf '%s\n' "$TORCH_SPEC" >"$STATE_DIR/torch-constraint.txt"
        constraints=(-c "$STATE_DIR/torch-constraint.txt")
    fi
    pip_install ${constraints[@]+"${constraints[@]}"} -r "$REQUIREMENTS"
}

check_verify() { return 1; }

do_verify() {
    local gpu=0
    has_nvidia_gpu && gpu=1
    "$PY" - "$gpu" <<'EOF'
import sys
gpu = sys.argv[1] == "1"
try:
    import torch
except Exception as exc:
    print(f"ERROR: torch is not importable in this venv: {exc}")
    sys.exit(3)
cuda = torch.cuda.is_available()
devices = torch.cuda.device_count() if cuda else 0
name = torch.cuda.get_device_name(0) if devices else "cpu"
print(f"AWSRUN_VERIFY torch={torch.__version__} cuda={cuda} devices={devices} name={name}")
if gpu and not cuda:
    print(
        f"ERROR: an NVIDIA GPU is present but torch.cuda.is_available() is False "
        f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
        "check nvidia-smi and that this torch build matches the driver"
    )
    sys.exit(4)
if cuda:
    try:  # catches builds without kernels for this GPU ("no kernel image")
        (torch.ones(8, device="cuda") * 2).sum().item()
    except Exception as exc:
        cap = "sm_%d%d" % torch.cuda.get_device_capability(0)
        print(f"ERROR: torch cannot run on {name} ({cap}); built for {torch.cuda.get_arch_list()}: {exc}")
        sys.exit(5)
else:
    print("no GPU: CPU build")
EOF
}

report_verify() { grep -E '^(AWSRUN_VERIFY |no GPU: )' "$1" || true; }

# ----------------------------------------------------------------- runner

STEP_PID=""
on_signal() {
    if [ -n "$STEP_PID" ]; then
        pkill -TERM -P "$STEP_PID" 2>/dev/null || true
        kill -TERM "$STEP_PID" 2>/dev/null || true
    fi
    echo "bootstrap: interrupted ($1)"
    exit "$2"
}
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM

STEP_ACTED=0

# run_step STEP INPUTS [nomarker]
run_step() {
    local name=$1 inputs=$2 nomarker=${3:-} reason rc start log
    STEP_ACTED=0
    selected "$name" || return 0
    if ! forced "$name" && reason=$(check_"$name" "$inputs"); then
        [ -n "$nomarker" ] || write_marker "$name" "$inputs"
        echo "==> $name skip $reason"
        return 0
    fi
    log="$LOG_DIR/$name.log"
    echo "==> $name start"
    start=$SECONDS
    # Background + wait so INT/TERM traps run while the step is busy.
    (do_"$name" "$inputs") >"$log" 2>&1 </dev/null &
    STEP_PID=$!
    set +e
    wait "$STEP_PID"
    rc=$?
    set -e
    STEP_PID=""
    if [ "$rc" -ne 0 ]; then
        echo "==> $name FAILED exit=$rc log=$log"
        tail -n 20 "$log"
        exit "$rc"
    fi
    [ -n "$nomarker" ] || write_marker "$name" "$inputs"
    if declare -F "report_$name" >/dev/null; then "report_$name" "$log"; fi
    echo "==> $name done $((SECONDS - start))s"
    STEP_ACTED=1
}

skip_step() {
    selected "$1" && echo "==> $1 skip $2"
    return 0
}

# ------------------------------------------------------------------- main

run_step packages "packages=${BASE_PACKAGES[*]} upgrade=$UPGRADE"

run_step driver "packages=$DRIVER_PACKAGES"
if [ "$STEP_ACTED" = 1 ]; then
    echo "AWSRUN_REBOOT_REQUIRED"
    exit 100
fi

run_step venv "path=$VENV"

if [ -z "$TORCH_SPEC" ]; then
    skip_step torch "no --torch-spec given"
else
    run_step torch "spec=$TORCH_SPEC index=$TORCH_INDEX_URL pip_args=$PIP_ARGS venv=$VENV"
fi

if [ -z "$REQUIREMENTS" ]; then
    skip_step requirements "no --requirements given"
elif [ ! -f "$REQUIREMENTS" ]; then
    skip_step requirements "$REQUIREMENTS does not exist"
else
    sha=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
    run_step requirements "file=$REQUIREMENTS sha256=$sha torch=$TORCH_SPEC pip_args=$PIP_ARGS venv=$VENV"
fi

run_step verify "" nomarker
