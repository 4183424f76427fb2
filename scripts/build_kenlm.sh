#!/usr/bin/env bash
# Build KenLM's lmplz (modified Kneser-Ney estimation) and build_binary from the kenlm sdist on PyPI,
# into .venv/bin, where `asr lm build` finds them. Needs cmake, g++ and Debian's Boost packages
# (scripts/setup.sh --dev installs them). About 90 s on 2 cores. Usage: bash scripts/build_kenlm.sh [BINDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BINDIR=${1:-.venv/bin}
PY=${PY:-.venv/bin/python}
if [[ -x "$BINDIR/lmplz" && -x "$BINDIR/build_binary" ]]; then
    echo "build_kenlm: $BINDIR/lmplz and build_binary already there"
    exit 0
fi
VERSION=$("$PY" -c "import importlib.metadata as m; print(m.version('kenlm'))" 2>/dev/null || echo 0.3.0)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip download -q --no-deps --no-binary kenlm --no-build-isolation "kenlm==$VERSION" -d "$WORK" 2>&1 | grep -v '^WARNING' || true
tar xzf "$WORK"/kenlm-*.tar.gz -C "$WORK"
SRC=$(echo "$WORK"/kenlm-*/)
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 -DCOMPILE_TESTS=OFF > "$WORK/cmake.log" 2>&1 \
    || { tail -30 "$WORK/cmake.log"; exit 1; }
make -C "$WORK/build" -j"$(nproc)" lmplz build_binary > "$WORK/make.log" 2>&1 || { tail -30 "$WORK/make.log"; exit 1; }
mkdir -p "$BINDIR"
cp "$WORK/build/bin/lmplz" "$WORK/build/bin/build_binary" "$BINDIR/"
echo "build_kenlm: lmplz and build_binary (kenlm $VERSION) in $BINDIR"
