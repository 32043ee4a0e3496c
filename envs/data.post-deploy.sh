#!/usr/bin/env bash
# Snakemake runs this once after creating envs/data.yaml: medmnist without torch & co.
set -euo pipefail
pip install --no-deps medmnist==3.0.2
