# The worker image: an official CUDA PyTorch runtime plus vcat's worker extra. The same image runs
# on CPU-only hosts (the cpu profile in docker-compose.yml).
ARG PYTORCH_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime
FROM ${PYTORCH_IMAGE}
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY vcat ./vcat
COPY service ./service
COPY worker ./worker
COPY migrations ./migrations
# torch comes from the base image; pip must not replace it.
RUN pip install --no-cache-dir ".[worker]" \
    && python -c "import torch, av; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
RUN useradd --create-home --uid 10001 vcat && mkdir -p /data && chown vcat /data
USER vcat
ENV VCAT_DATA_DIR=/data
CMD ["vcat", "worker", "--queues", "gpu"]
