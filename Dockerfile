# grand-challenge algorithm image for CHIMERA Task 3 (see README: "Submit to grand-challenge").
# CUDA 12.8 runtime: runs on the T4 (sm_75) of ml.g4dn.xlarge; build for linux/amd64 (build.sh).
FROM pytorch/pytorch:2.14.1-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TORCH_HOME=/tmp/torch \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/home/user

RUN groupadd --system --gid 10001 user \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/user user

WORKDIR /opt/app

# Pinned requirements (torch/torchvision are the base image's own, at the same pins).
COPY requirements.txt /opt/app/requirements.txt
RUN python -m pip install --no-cache-dir -r /opt/app/requirements.txt

# The package, the entry point and the small baked-in files; no weights (they come from the model tarball).
COPY survfusion /opt/app/survfusion
COPY inference.py /opt/app/inference.py
COPY resources /opt/app/resources

USER 10001:10001

ENTRYPOINT ["python", "inference.py"]
