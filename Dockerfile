# The prelabel backend / worker image. Secrets come from the environment at run time, never the image.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY prelabel prelabel
COPY ml_backend ml_backend
COPY label_config label_config
COPY export export
COPY train train
RUN pip install --no-cache-dir . && useradd --create-home prelabel
USER prelabel
ENV PRELABEL_HOST=0.0.0.0 PRELABEL_PORT=9090 PRELABEL_LOG_JSON=true
EXPOSE 9090
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/health', timeout=2)"
CMD ["prelabel", "serve"]
