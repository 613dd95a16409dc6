# The Mailflow image: all seven services in one image, the service chosen by the command.
#   docker build -t mailflow:dev .
#   docker run mailflow:dev mailflow serve smtp-ingress      # or: python -m mailflow_smtp_ingress
#   docker run mailflow:dev mailflow --help                  # the admin command is in it too
# Configured by the environment (and/or a TOML file named by MAILFLOW_CONFIG). Inside the container
# every service listens on the standard ports and answers HTTP (/healthz, /readyz, /metrics, REST) on
# 8080; each reads only its own MAILFLOW_<SERVICE>_* variables, so the ENV below serves all six.

# --- dependencies: the pinned runtime closure (deploy/requirements.lock) in /opt/mailflow ----------------
FROM python:3.11-slim-bookworm AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY deploy/requirements.lock deploy/build-requirements.lock /tmp/
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-deps --requirement /tmp/build-requirements.lock \
    && python3 -m venv /opt/mailflow \
    && /opt/mailflow/bin/pip install --no-deps --requirement /tmp/requirements.lock

# --- the project: all Mailflow packages as one wheel, installed without touching the pins; then the
# runtime venv loses pip and setuptools (nothing imports them at run time) ------------------------------
FROM deps AS app
COPY pyproject.toml README.md /src/
COPY shared /src/shared
COPY services /src/services
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheels /src \
    && /opt/mailflow/bin/pip install --no-deps /tmp/wheels/*.whl \
    && /opt/mailflow/bin/pip check \
    && /opt/mailflow/bin/pip uninstall --yes --quiet pip setuptools

# --- runtime: no compilers, no build tools, a non-root user ------------------------------------------
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 mailflow \
    && useradd --system --no-log-init --uid 10001 --gid mailflow --home-dir /var/lib/mailflow mailflow \
    && mkdir -p /var/lib/mailflow/blobs /etc/mailflow/tls \
    && chown -R mailflow:mailflow /var/lib/mailflow /etc/mailflow
COPY --from=app /opt/mailflow /opt/mailflow
ENV PATH=/opt/mailflow/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MAILFLOW_LOG_FORMAT=json \
    MAILFLOW_TLS_CERT=/etc/mailflow/tls/cert.pem \
    MAILFLOW_TLS_KEY=/etc/mailflow/tls/key.pem \
    MAILFLOW_STORE_HTTP_LISTEN=0.0.0.0:8080 \
    MAILFLOW_STORE_BLOB_DIR=/var/lib/mailflow/blobs \
    MAILFLOW_RESOLVER_HTTP_LISTEN=0.0.0.0:8080 \
    MAILFLOW_QUEUE_HTTP_LISTEN=0.0.0.0:8080 \
    MAILFLOW_DELIVERY_HTTP_LISTEN=0.0.0.0:8080 \
    MAILFLOW_SMTP_HTTP_LISTEN=0.0.0.0:8080 \
    MAILFLOW_SMTP_LISTEN=0.0.0.0:25 \
    MAILFLOW_SMTP_SUBMISSION_LISTEN=0.0.0.0:587 \
    MAILFLOW_SMTP_SMTPS_LISTEN=0.0.0.0:465 \
    MAILFLOW_IMAP_HTTP_LISTEN=0.0.0.0:8080 \
    MAILFLOW_IMAP_LISTEN=0.0.0.0:143 \
    MAILFLOW_IMAP_IMAPS_LISTEN=0.0.0.0:993 \
    MAILFLOW_IMAP_POP3_LISTEN=0.0.0.0:110 \
    MAILFLOW_IMAP_POP3S_LISTEN=0.0.0.0:995 \
    MAILFLOW_IMAP_MANAGESIEVE_LISTEN=0.0.0.0:4190 \
    MAILFLOW_WEB_HTTP_LISTEN=0.0.0.0:8080 \
    MAILFLOW_WEB_LISTEN=0.0.0.0:80
WORKDIR /var/lib/mailflow
USER 10001:10001
# HTTP 8080 (every service); SMTP 25, submission 587, SMTPS 465 (smtp-ingress);
# IMAP 143, IMAPS 993, POP3 110, POP3S 995, ManageSieve 4190 (imap-pop3); the web console 80 (web)
EXPOSE 8080 25 587 465 443 143 993 110 995 4190 80
# Finds the service this container runs and asks its /readyz on its HTTP port (mailflow.healthcheck).
HEALTHCHECK --interval=10s --timeout=10s --start-period=30s --retries=5 \
    CMD ["python", "-m", "mailflow.healthcheck", "--timeout", "8"]
STOPSIGNAL SIGTERM
CMD ["mailflow", "--help"]
