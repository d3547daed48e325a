# The API image: FastAPI + SQLAlchemy + PyAV (to probe uploads). No torch.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY vcat ./vcat
COPY service ./service
COPY worker ./worker
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 vcat && mkdir -p /data && chown vcat /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && python -c "import service.app, vcat.cli, sys; assert 'torch' not in sys.modules"
USER vcat
WORKDIR /home/vcat
ENV VCAT_DATA_DIR=/data
EXPOSE 8000
CMD ["vcat", "api", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
