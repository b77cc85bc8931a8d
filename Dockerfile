# syntax=docker/dockerfile:1
# The motion-farm image: the `farm` CLI and a Ray node (head, worker or job submitter) in one.
#
#   GPU (default; CUDA base, for the GPU worker group):
#     docker build -t motion-farm:gpu .
#   CPU only (laptops, CPU node pools, the dev overlay):
#     docker build --build-arg BASE_IMAGE=ubuntu:22.04 --build-arg VARIANT=cpu -t motion-farm:cpu .
#
# The package is installed as `make setup` installs it: a virtual environment with the project
# installed editable (conf/ and jobs/ are read from the source tree), torch pinned to 2.13.0.
# The CUDA base image: the driver hooks only; torch's wheel brings its own CUDA and cuDNN libraries.
ARG BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu22.04
FROM ${BASE_IMAGE}

# gpu: torch's default Linux wheel (it brings its CUDA libraries); cpu: the CPU-only wheel.
ARG VARIANT=gpu
ARG FARM_UID=1000

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_AUTH_MODE=disabled \
    HF_HUB_OFFLINE=1 \
    PATH=/opt/motion-farm/.venv/bin:$PATH

# Python 3.11 (deadsnakes on Ubuntu 22.04), libGL and glib for OpenCV, ffmpeg libraries come with PyAV's wheel.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates software-properties-common gnupg \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv libgl1 libglib2.0-0 \
 && apt-get purge -y software-properties-common \
 && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/motion-farm
COPY pyproject.toml README.md LICENSE ./
COPY farm ./farm
COPY conf ./conf
COPY jobs ./jobs
RUN python3.11 -m venv .venv \
 && .venv/bin/pip install --upgrade pip \
 && if [ "$VARIANT" = "cpu" ]; then \
      .venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu; \
    else \
      .venv/bin/pip install torch==2.13.0; \
    fi \
 && .venv/bin/pip install -e . \
 && farm --help > /dev/null

# Never root: a fixed uid so Kubernetes can check runAsNonRoot; caches and outputs under its home.
RUN useradd --uid ${FARM_UID} --create-home --shell /bin/bash farm \
 && mkdir -p /home/farm/.cache /work \
 && chown -R farm:farm /home/farm /work
USER ${FARM_UID}
ENV HOME=/home/farm
WORKDIR /work

ENTRYPOINT ["farm"]
CMD ["--help"]
