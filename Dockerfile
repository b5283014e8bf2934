# The image of coelho-pipeline's code location: the pipeline installed from this repository, git,
# and `dagster code-server` on port 3030. The same image runs every run's Kubernetes Job (the run
# launcher starts it with `dagster api execute_run …` as the container's arguments, which is why
# there is no ENTRYPOINT). Build context: the repository root.
#
#   docker build -t 127.0.0.1:5000/coelho/coelho-pipeline:0.1.0 .
#
# Without Docker Hub, on a local stand-in for python:3.11-slim (scripts/base-images.sh):
#   docker build --network=host --build-arg PYTHON_IMAGE=coelho-base/python:3.11-slim -t … .
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/dagster_home

# git: GitPython drives the git binary (cache clone, ls-remote, push); openssh-client: ssh:// remotes.
# The directories are the ones the run launcher mounts into (k3d/dagster/dagster.yaml).
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --home-dir /opt/dagster --shell /usr/sbin/nologin dagster \
 && python3 -m venv /opt/venv \
 && mkdir -p /opt/dagster/dagster_home /opt/dagster/storage /opt/dagster/app \
 && chown -R 10001:10001 /opt/dagster

# Dependencies first, resolved from pyproject.toml with an empty package: a change to the pipeline's
# code reuses this layer.
COPY pyproject.toml /tmp/src/
RUN mkdir /tmp/src/coelho_pipeline && touch /tmp/src/coelho_pipeline/__init__.py \
 && pip install /tmp/src \
 && pip uninstall -y coelho-pipeline \
 && rm -rf /tmp/src/coelho_pipeline /tmp/src/build

COPY coelho_pipeline/ /tmp/src/coelho_pipeline/
RUN pip install --no-deps /tmp/src && rm -rf /tmp/src

WORKDIR /opt/dagster/app
USER 10001:10001
EXPOSE 3030
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["dagster", "api", "grpc-health-check", "-p", "3030"]
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "3030", "-m", "coelho_pipeline.definitions", "--location-name", "coelho"]
