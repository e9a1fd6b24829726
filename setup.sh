#!/usr/bin/env bash
# Set up faceturn in ./.venv: Python venv, PyTorch (only when none is installed), faceturn with its test/figure extras.
#   FACETURN_TORCH   pip requirement for PyTorch when none is installed (default: torch==2.13.0, the CPU wheel)
#   FACETURN_EXTRAS  extras to install (default: dev,viz,prep,live,agents — tests, figures, real-corpus extraction,
#                    the live web app, the Pipecat/LiveKit integrations; `lora` for LoRA fine-tuning; `slurm` for
#                    --executor slurm; `onnx` for `faceturn export` and `--backend onnx`, also in dev). With dev, kyutai's
#                    moshi==0.2.13 is installed without its pins (parity tests)
#   PYTHON           interpreter used to create the venv (default: python3)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "setup: installing ${FACETURN_TORCH:-torch==2.13.0}" >&2
    "${PIP[@]}" install "${FACETURN_TORCH:-torch==2.13.0}"
fi
EXTRAS="${FACETURN_EXTRAS:-dev,viz,prep,live,agents}"
"${PIP[@]}" install -e ".[$EXTRAS]"
if [[ ",$EXTRAS," == *,dev,* ]] && ! .venv/bin/python -c "import moshi" 2>/dev/null; then
    # kyutai's implementation, for the parity tests only; its pins (torch<2.10) would pull gigabytes, its imports are
    # in the dev extras (einops; torch is already here)
    "${PIP[@]}" install --no-deps moshi==0.2.13
fi
echo "setup: ready ($(.venv/bin/python -c 'import torch, faceturn; print(f"faceturn {faceturn.__version__}, torch {torch.__version__}")'))" >&2
