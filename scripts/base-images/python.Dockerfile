# Stand-in for python:3.11-slim where Docker Hub cannot be reached: Debian 12's own Python 3.11.
ARG DEBIAN_BASE=coelho-base/debian:bookworm
FROM ${DEBIAN_BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/python3 /usr/local/bin/python
# certs/ holds the build machine's extra CAs (often none); pip is pointed at the system store.
COPY certs/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
