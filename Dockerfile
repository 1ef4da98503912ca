# The ipsla container image: `docker build -t ipsla .` (docs/install.md: running the responder and
# the agent with --network host and the capabilities each needs). A test
# (crates/cli/tests/it/packaging.rs) keeps the paths, flags, ports and capabilities here equal to
# what the binary and the shipped configuration use.

# Build: the toolchain of rust-toolchain.toml, on the Debian release the runtime uses (same glibc).
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ipsla \
 && strip target/release/ipsla

# Run: Debian slim, the binary, the shipped configuration, a non-root user.
FROM debian:bookworm-slim
COPY --from=build /src/target/release/ipsla /usr/bin/ipsla
COPY dist/deb/agent.toml /etc/ipsla/agent.toml
COPY dist/deb/responder.toml /etc/ipsla/responder.toml
# File capabilities instead of root, both in Docker's default set: ports below 1024
# (CAP_NET_BIND_SERVICE) and ICMP operations, VRFs (CAP_NET_RAW). The binary drops at start
# whichever its configuration does not use. Route failover needs CAP_NET_ADMIN: see docs/install.md.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin ca-certificates \
 && setcap cap_net_bind_service,cap_net_raw+ep /usr/bin/ipsla \
 && apt-get purge -y libcap2-bin && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
 && useradd --system --user-group --uid 10167 --home-dir /var/lib/ipsla --shell /usr/sbin/nologin ipsla \
 && install -d -o ipsla -g ipsla -m 0750 /var/lib/ipsla /run/ipsla
USER ipsla
WORKDIR /var/lib/ipsla
VOLUME /var/lib/ipsla
# v1 control (IOS), RFC 6812 v2 control, the agent's HTTP (/metrics, /-/healthy, the API)
EXPOSE 1967/udp 1167/udp 9167/tcp
# /-/healthy answers 200 while the scheduler turns; bash's /dev/tcp spares the image an HTTP client
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9167 && printf 'GET /-/healthy HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/bin/ipsla"]
CMD ["agent", "--config", "/etc/ipsla/agent.toml"]
