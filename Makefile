# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.13.0
# medssl[nnunet]'s packages for its tests, installed without their dependency trees: nnU-Net's
# network package requires timm, which requires torchvision (a multi-GB CUDA torch); the modules
# medssl and its tests import (dynamic_network_architectures.architectures.unet, nnU-Net's
# load_pretrained_weights and get_network_from_plans) need only torch, numpy and einops, plus
# batchgenerators' file helpers for get_network_from_plans.
NNUNET_TEST_PINS := dynamic-network-architectures==0.4.4 nnunetv2==2.8.1 batchgenerators==0.25.5

.PHONY: demo test install clean bench bench-gpu

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first: the pinned CPU build pip finds on disk; an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install "$(TORCH_PIN)"
	$(BIN)/python -m pip install -e '.[dev]'
	$(BIN)/python -m pip install --no-deps $(NNUNET_TEST_PINS)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/medssl demo --out demo_run

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# On a machine with an NVIDIA GPU (where pip's torch==2.13.0 is the CUDA build): the 3D 96^3 recipe of
# SparK and SimCLR (resnet18, batch 8), bf16 and fp32: samples/s, GPU busy %, peak GPU memory, and
# the overhead over the bare network's forward and backward.
bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/pretrain_throughput.py --device cuda --size 96 --batch 8 --encoder resnet18 \
		--methods spark,simclr --precisions bf16,fp32 --warmup 5 --steps 20 --out bench_gpu.jsonl

clean:
	rm -rf demo_run .pytest_cache
