# grand-challenge algorithm image for CHIMERA Task 3 (see README: "Submit to grand-challenge").
# Build for linux/amd64 (build.sh).
#
# One torch, from one place: the base is the official Python 3.11 slim image, which carries no torch
# and no CUDA of its own, and everything is installed from requirements.txt, the same pins and the
# same wheels CI tests. torch 2.10.0 from the package index brings the CUDA 12.8 runtime as wheels
# (nvidia-*-cu12: cudart, cuBLAS, cuDNN 9, ...) and SASS for sm_75, the T4 of ml.g4dn.xlarge, so no
# PTX is compiled at run time. What the host must provide is the driver: with CUDA 12's minor-version
# compatibility a 12.8 runtime runs on any driver >= 525.60.13 (survfusion.encoders.MIN_DRIVER).
# The NVIDIA container runtime mounts the driver into the container because of the two NVIDIA_*
# variables below; this base has no NVIDIA_REQUIRE_CUDA, so the runtime does no version check of its
# own: an older driver is caught by inference.py, which logs torch, its CUDA runtime, the driver and
# the GPU, and fails the job in one line when a GPU is visible but unusable (never a silent CPU run).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HF_HUB_OFFLINE=1 \
    TORCH_HOME=/tmp/torch \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/home/user

RUN groupadd --system --gid 10001 user \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/user user

WORKDIR /opt/app

# Exactly requirements.txt: what the container's one job imports, nothing for training.
COPY requirements.txt /opt/app/requirements.txt
RUN python -m pip install --no-cache-dir -r /opt/app/requirements.txt \
    && python -c "import torch; print('image torch', torch.__version__, 'CUDA runtime', torch.version.cuda, 'arch', torch._C._cuda_getArchFlags())"

# The package, the entry point and the small baked-in files; no weights (they come from the model tarball).
COPY survfusion /opt/app/survfusion
COPY inference.py /opt/app/inference.py
COPY resources /opt/app/resources

USER 10001:10001

ENTRYPOINT ["python", "inference.py"]
