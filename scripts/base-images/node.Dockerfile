# Stand-in for node:*-slim where Docker Hub cannot be reached: Debian 12's Node.js 18 and npm.
ARG DEBIAN_BASE=coelho-base/debian:bookworm
FROM ${DEBIAN_BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
# certs/ holds the build machine's extra CAs (often none); npm is pointed at the system store.
COPY certs/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
CMD ["node"]
