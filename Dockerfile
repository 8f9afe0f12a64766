# The prelabel backend / worker image. Secrets come from the environment at run time, never the image.
# EXTRAS=train builds the trainer's image (torch, transformers, peft: fine-tuning on a GPU).
FROM python:3.11-slim
ARG EXTRAS=""
WORKDIR /app
COPY pyproject.toml README.md ./
COPY prelabel prelabel
COPY ml_backend ml_backend
COPY prediction prediction
COPY label_config label_config
COPY jobs jobs
COPY ranking ranking
COPY quality quality
COPY studio studio
COPY stack stack
COPY export export
COPY train train
COPY deploy/flywheel.yaml deploy/flywheel.yaml
RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}" && useradd --create-home prelabel && mkdir -p /data && chown prelabel /data
USER prelabel
ENV PRELABEL_HOST=0.0.0.0 PRELABEL_PORT=9090 PRELABEL_LOG_JSON=true
EXPOSE 9090
HEALTHCHECK --interval=15s --timeout=3s CMD ["prelabel-health"]
CMD ["prelabel", "serve"]
