# CPU image that serves a trained model with `asr serve` (docs/serving.md).
#   docker build -f docker/serve.Dockerfile -t asr-serve .
#   docker run -p 8000:8000 -v $PWD/exp/synthetic_en:/models -e ASR_API_KEYS=secret asr-serve
FROM debian:bookworm-slim

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev build-essential ffmpeg libsndfile1 libtcmalloc-minimal4 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /asr
COPY . /asr
RUN bash scripts/setup.sh
ENV PATH=/asr/.venv/bin:$PATH
EXPOSE 8000
# the LM, when the model folder has a decoding.json from `asr lm tune`, is the one it names
CMD ["asr", "serve", "--model", "/models/best.pt", "--host", "0.0.0.0", "--port", "8000"]
