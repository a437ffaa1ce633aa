# scripts/deps.sh - the one list of Debian 12 packages this project needs.
# Sourced by scripts/install-deps.sh and read by the Dockerfile check; keep
# it in step with the dependency() calls in meson.build.

# Build: compilers, meson, and the -dev package behind every pkg-config name.
DEPS_BUILD="gcc meson ninja-build pkg-config
  libmicrohttpd-dev libjansson-dev libcurl4-openssl-dev libxml2-dev libssl-dev
  libhiredis-dev libinih-dev libcmocka-dev"

# Runtime libraries of the two binaries (what a slim image needs).
DEPS_RUNTIME="libmicrohttpd12 libjansson4 libcurl4 libxml2 libssl3 libhiredis0.14
  libinih1 ca-certificates"

# Running the demo and the test suites.
DEPS_RUN="redis-server curl ca-certificates"
DEPS_TEST="python3 python3-pytest python3-pytest-timeout python3-requests redis-server curl prometheus"
