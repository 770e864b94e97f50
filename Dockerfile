# LLM Workbench image: the same image runs the web app (`workbench serve --no-worker`) and the
# workers (`workbench worker`). CPU torch by default; for GPU workers build with
#   --build-arg TORCH_SPEC="torch==2.13.0" --build-arg TORCH_INDEX=<a CUDA wheel index>
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX=""
ENV PYTHONUNBUFFERED=1 \
    WORKBENCH_DATA_DIR=/data

# libmagic1: python-magic, which datatrove's WARC reader uses for records without a payload type (workbench clean).
RUN apt-get update && apt-get install -y --no-install-recommends libmagic1 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY llm ./llm
COPY db ./db
COPY worker ./worker
COPY web ./web
COPY bench ./bench
RUN pip install --no-cache-dir ${TORCH_INDEX:+--index-url $TORCH_INDEX} "$TORCH_SPEC" \
 && pip install --no-cache-dir .

VOLUME ["/data"]
EXPOSE 7860
CMD ["workbench", "serve", "--host", "0.0.0.0", "--port", "7860", "--no-worker"]
