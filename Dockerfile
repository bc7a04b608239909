# septet's runtime image: the runtime-only install (no dev or bench extras), run as a
# user without privileges, its state (journal, SMPP store, socket) under a volume.
#
#   docker build -t septet .
#   docker run -v septet-state:/var/lib/septet -p 7750:7750 -p 9750:9750 septet
#
# The image's config (packaging/docker/septet.toml) runs the four provider simulators;
# mount your own at /etc/septet/septet.toml, secrets as `env:` values from the
# environment (docs/operations.md "Packaging"). Give `docker stop -t` (compose's
# stop_grace_period) the drain plus 8 s, as packaging/docker/compose.yml does: the
# drain and the listeners' shutdown may need more than Docker's default 10 s.

FROM python:3.11-slim AS build
# The C extension (engine/_native_segment.c) needs a compiler to build the wheel.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY engine ./engine
COPY bridges ./bridges
# Wheels of septet and of exactly the runtime dependencies, at the versions the suite
# passed with (constraints.txt).
RUN pip wheel --no-cache-dir -c constraints.txt --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/septet --create-home septet \
    && chmod 0700 /var/lib/septet
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
COPY packaging/docker/septet.toml /etc/septet/septet.toml
USER septet
WORKDIR /var/lib/septet
VOLUME ["/var/lib/septet"]
# NDJSON ingress, callbacks (and /healthz), metrics, SMPP.
EXPOSE 7750 9750 9751 2775
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9750/healthz', timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["septet"]
CMD ["run", "--config", "/etc/septet/septet.toml"]
