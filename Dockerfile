# The mlsteward image: the operator and the serving runtime (`mlsteward serve|route|validate|train|...`).
# hack/image.sh builds the same image without Docker (debootstrap + the same three steps); keep the two in step.
#   docker build -t mlsteward:$(git describe --always) .
FROM debian:bookworm-slim AS base
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 mlsteward \
 && useradd --uid 10001 --gid 10001 --home-dir /home/mlsteward --create-home --shell /usr/sbin/nologin mlsteward

# Dependencies: a layer that changes only with pyproject.toml.
FROM base AS deps
COPY pyproject.toml /tmp/src/pyproject.toml
RUN python3 -m venv /opt/mlsteward \
 && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("/tmp/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && /opt/mlsteward/bin/pip install --no-cache-dir --only-binary=:all: -r /tmp/requirements.txt \
 && rm -rf /tmp/src /tmp/requirements.txt

# The project's wheel, built apart so that no build tools end up in the image.
FROM deps AS wheel
COPY pyproject.toml README.md /tmp/src/
COPY operator /tmp/src/operator
COPY runtime /tmp/src/runtime
RUN /opt/mlsteward/bin/pip wheel --no-deps -w /tmp/dist /tmp/src

FROM deps
COPY --from=wheel /tmp/dist /tmp/dist
RUN /opt/mlsteward/bin/pip install --no-cache-dir --no-deps --no-index /tmp/dist/*.whl && rm -rf /tmp/dist
ENV PATH=/opt/mlsteward/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/mlsteward PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/home/mlsteward
LABEL org.opencontainers.image.title=mlsteward org.opencontainers.image.licenses=Apache-2.0
USER 10001:10001
WORKDIR /home/mlsteward
ENTRYPOINT ["mlsteward"]
