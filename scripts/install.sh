#!/usr/bin/env bash
# Creates .venv with torch, detectron2, open_clip and this package (editable).
# Safe to re-run: a stamp keyed by the install inputs makes a second run take about a second.
#
# Environment knobs:
#   VENV=path                 where the virtual environment lives (default .venv)
#   PYTHON=python3.11         interpreter used to create it (default python3)
#   CLIPZSS_D2_SOURCE=1       build detectron2 from GitHub source instead of the PyPI redistribution
#                             (needs internet access and a C++ toolchain)
#   CLIPZSS_TORCH=cu121       which torch build: cpu, or the CUDA it is built for (cu118, cu121,
#                             cu124, ...), from PyTorch's own index. Unset: whatever PyPI serves
#                             (on Linux a build for a recent CUDA, which needs a recent NVIDIA
#                             driver). A different build already in $VENV is replaced.
#   TORCH_INDEX_URL=url       a mirror of https://download.pytorch.org/whl (used with CLIPZSS_TORCH)
#   CLIPZSS_INSTALL_DRY_RUN=1 print the torch install this run would do, change nothing
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# detectron2 is not on PyPI under its own name. sal-detectron2 0.7.2 is a wheel of upstream commit
# a59f0563 (2024-04-17), pure Python apart from a cp310 _C extension that is never needed for
# semantic segmentation. Pinned by version and sha256 so a changed upload cannot slip in.
D2_WHEEL=sal_detectron2-0.7.2-cp310-none-any.whl
D2_SHA256=491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561
D2_SOURCE_URL="git+https://github.com/facebookresearch/detectron2.git"

log() { printf '[install] %s\n' "$*"; }
die() { printf '[install] ERROR: %s\n' "$*" >&2; exit 1; }

TORCH_BUILD=${CLIPZSS_TORCH:-}
TORCH_PIP_ARGS=("torch>=2.1" "torchvision>=0.16")
if [[ -n "$TORCH_BUILD" ]]; then
    [[ "$TORCH_BUILD" =~ ^(cpu|cu[0-9]{3,4})$ ]] \
        || die "CLIPZSS_TORCH='$TORCH_BUILD' names no torch build; use cpu or the CUDA version as cuNNN (cu118, cu121, cu124, ...)."
    TORCH_PIP_ARGS+=(--index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl}/$TORCH_BUILD")
fi

# the build tag (cpu, cu121, ...) of the torch in $VENV, empty when none imports
installed_torch_build() {
    "$VENV/bin/python" -c "import torch; c = torch.version.cuda; print('cu' + c.replace('.', '') if c else 'cpu')" 2>/dev/null || true
}

if [[ "${CLIPZSS_INSTALL_DRY_RUN:-0}" == "1" ]]; then
    have=$(installed_torch_build)
    log "dry run: torch in $VENV: ${have:-none}; wanted: ${TORCH_BUILD:-whatever PyPI serves}"
    if [[ -n "$have" && ( -z "$TORCH_BUILD" || "$have" == "$TORCH_BUILD" ) ]]; then
        log "dry run: would keep the installed torch"
    else
        [[ -n "$have" ]] && log "dry run: would uninstall torch torchvision"
        log "dry run: would run pip install ${TORCH_PIP_ARGS[*]}"
    fi
    exit 0
fi

command -v "$PYTHON" >/dev/null || die "'$PYTHON' not found. Install Python >= 3.10 or set PYTHON=/path/to/python3."

stamp_key() {
    {
        cat scripts/install.sh setup.cfg pyproject.toml
        "$PYTHON" --version 2>&1
        echo "${CLIPZSS_D2_SOURCE:-0} ${TORCH_BUILD} ${TORCH_INDEX_URL:-}"
    } | sha256sum | cut -d' ' -f1
}
STAMP="$VENV/.clipzss-install-stamp"
KEY=$(stamp_key)

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$KEY" ]] \
    && "$VENV/bin/python" -c "import torch, detectron2, open_clip, clipzss_d2" 2>/dev/null; then
    log "environment in $VENV is up to date"
    exit 0
fi

start=$(date +%s)
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

# torch first, on its own: ranges let pip take the newest build this machine allows.
have=$(installed_torch_build)
if [[ -n "$have" && -n "$TORCH_BUILD" && "$have" != "$TORCH_BUILD" ]]; then
    log "replacing the $have build of torch in $VENV by the $TORCH_BUILD build (CLIPZSS_TORCH)"
    "${PIP[@]}" uninstall -q -y torch torchvision
fi
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
    log "installing torch and torchvision${TORCH_BUILD:+ ($TORCH_BUILD build)}"
    "${PIP[@]}" install -q "${TORCH_PIP_ARGS[@]}" \
        || die "could not install torch${TORCH_BUILD:+ for $TORCH_BUILD} (pip failed, see above). Check the network, or unset CLIPZSS_TORCH to take PyPI's build."
fi

if ! "$PY" -c "import detectron2" 2>/dev/null; then
    if [[ "${CLIPZSS_D2_SOURCE:-0}" == "1" ]]; then
        log "building detectron2 from source ($D2_SOURCE_URL)"
        "${PIP[@]}" install -q --no-build-isolation "$D2_SOURCE_URL" \
            || die "detectron2 source build failed. Unset CLIPZSS_D2_SOURCE to use the prebuilt wheel."
    else
        log "installing detectron2 (sal-detectron2 0.7.2 wheel, sha256-pinned)"
        "${PIP[@]}" install -q installer
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        # The wheel is tagged cp310 only; its Python code runs on any 3.x, so ask pip for the 3.10 file.
        "${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version 3.10 \
            "sal-detectron2==0.7.2" -d "$tmp" 2>/dev/null \
            || die "could not download sal-detectron2==0.7.2 from PyPI. Check network access to PyPI, or set CLIPZSS_D2_SOURCE=1 to build from GitHub."
        got=$(sha256sum "$tmp/$D2_WHEEL" | cut -d' ' -f1)
        [[ "$got" == "$D2_SHA256" ]] || die "sha256 mismatch for $D2_WHEEL: expected $D2_SHA256, got $got"
        "$PY" -m installer "$tmp/$D2_WHEEL"
    fi
fi

log "installing clipzss_d2 (editable) with its runtime, web demo and test dependencies"
"${PIP[@]}" install -q -e ".[test,web]"
log "note: pip may say sal-detectron2 'requires numpy<2' and 'black'; both are expected (docs/INSTALL.md)"

"$PY" - <<'EOF'
import detectron2, open_clip, torch, numpy
import clipzss_d2  # noqa: F401  (registers everything)
print(f"[install] torch {torch.__version__}, detectron2 {detectron2.__version__}, "
      f"open_clip {open_clip.__version__}, numpy {numpy.__version__}")
EOF
echo "$KEY" > "$STAMP"
log "done in $(( $(date +%s) - start )) s"
