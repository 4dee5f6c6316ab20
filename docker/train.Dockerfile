# Training image: the eta-tf package on Python 3.11.
#
#   docker build -f docker/train.Dockerfile -t eta-tf-train .      (from the repo root)
#   docker run --rm -v "$PWD/runs:/work/runs" -w /work eta-tf-train [train flags]
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_USE_LEGACY_KERAS=1

WORKDIR /src
COPY setup.py README.md ./
COPY eta_tf ./eta_tf
COPY pipelines ./pipelines
COPY serving ./serving
RUN python -m pip install --upgrade pip && python -m pip install .

WORKDIR /work
ENTRYPOINT ["python", "-m", "eta_tf.train"]
