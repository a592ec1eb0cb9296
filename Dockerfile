# lsvd as a container image: the compiled binary at /.fly/lsvd (where a Fly-style VM image
# expects it) on a slim glibc base. Kernel attach uses FFI to libc.so.6, so the base must be glibc
# (not musl/alpine, not a static distroless image).
#
#   docker build -t lsvd .
#   docker run --rm lsvd --help
#   docker run --env-file lsvd.env --stop-timeout 300 --privileged lsvd serve
#
# The entrypoint is lsvd itself: the lsvd command follows the image name (`lsvd serve`, not
# `/.fly/lsvd serve`), and signals reach lsvd directly (it flushes and exits 0 on SIGTERM).
#
# Not built on the development machine (no Docker there); see README "What was and was not verified".

ARG DENO_VERSION=2.9.6

FROM denoland/deno:${DENO_VERSION} AS build
WORKDIR /src
# Dependencies first, so the layer is reused while only sources change.
COPY deno.json deno.lock ./
RUN deno install --frozen
COPY main.ts ./
COPY src/ ./src/
# `deno compile` downloads the matching `denort` runtime here (the build has internet access).
RUN deno task compile && ./lsvd --help

FROM debian:bookworm-slim
# ca-certificates: HTTPS to S3. e2fsprogs: mkfs.ext4, resize2fs and e2fsck for `serve --mount`
# (mount/umount/losetup come with the base image's util-linux `mount` package). libnbd-bin: nbdfuse,
# and fuse3: fusermount3, for `serve --fuse` where the kernel has no nbd module (run with
# --privileged for /dev/fuse and loop devices).
RUN apt-get update \
  && apt-get install -y --no-install-recommends ca-certificates e2fsprogs libnbd-bin fuse3 \
  && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/lsvd /.fly/lsvd
ENTRYPOINT ["/.fly/lsvd"]
CMD ["serve", "--help"]
