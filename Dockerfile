# grand-challenge algorithm image for CHIMERA Task 3 (see README: "Submit to grand-challenge").
# Build for linux/amd64 (build.sh).
#
# CUDA: this base carries torch 2.14.1 built for the CUDA 12.8 runtime (cuDNN 9), which supports the
# T4 (sm_75) of ml.g4dn.xlarge and needs a host driver >= 525.60.13 (CUDA 12 minor-version
# compatibility; >= 570 for every CUDA 12.8 feature). torch 2.14.1 from the package index is built for
# CUDA 13.0 and needs a driver >= 580, which grand-challenge's hosts are not known to have: that is
# why the base image's own torch is kept (requirements.txt pins the same version, so pip leaves it)
# and the build log prints which CUDA the image's torch carries. At run time inference.py logs torch's
# CUDA version and the host driver, and a GPU that torch cannot use fails the job in one line instead
# of a silent, hours-long CPU run.
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
RUN python -m pip install --no-cache-dir -r /opt/app/requirements.txt \
    && python -c "import torch; print('image torch', torch.__version__, 'CUDA runtime', torch.version.cuda)"

# The package, the entry point and the small baked-in files; no weights (they come from the model tarball).
COPY survfusion /opt/app/survfusion
COPY inference.py /opt/app/inference.py
COPY resources /opt/app/resources

USER 10001:10001

ENTRYPOINT ["python", "inference.py"]
