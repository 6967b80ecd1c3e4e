# Build: docker build -t pgqueue .   (or docker compose up --build)
# One image, three binaries on PATH: run it as `migrate up`, `api` or `worker`.

FROM golang:1.26 AS build
WORKDIR /src
# Static binaries: the runtime image has no libc.
ENV CGO_ENABLED=0

# Modules first, so editing code does not invalidate the download layer.
COPY go.mod go.sum ./
RUN go mod download

COPY . .
# Only the three processes (migrate, api, worker); cmd/bench is a developer tool and stays out.
# The mail templates, migrations and OpenAPI document are go:embed'ed, so the binaries
# are all the runtime needs.
RUN go build -trimpath -ldflags "-s -w" -o /out/bin/ ./cmd/migrate ./cmd/api ./cmd/worker \
 && mkdir -p /out/data

# distroless/static: no shell or package manager to patch, CA certificates (SMTP TLS,
# CACHE_WARM over https) and tzdata included, and a nonroot user (65532) already defined.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/bin/ /usr/local/bin/
# DATA_DIR owned by the runtime user. A named volume mounted on /data starts as a copy of
# this folder, ownership included; a bind mount must be writable by uid 65532 itself.
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
ENV DATA_DIR=/data
# Numeric, so runAsNonRoot-style checks can verify it without reading /etc/passwd.
USER 65532:65532
# API port, worker metrics port (the defaults of PORT and METRICS_PORT).
EXPOSE 3001 9464
CMD ["api"]
