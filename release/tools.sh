# The release's tools, installed once into .tools/ and reused while their versions match.
# Sourced by release/release.sh and tests/release/run.sh; `release_tools` installs, then sets
#   RELEASE_PY      Python with helm-python-sdk, oras (and bcrypt, for the test's htpasswd)
#   CYCLONEDX       cargo-cyclonedx
#   UMOCI SKOPEO REGISTRY   Debian's umoci, skopeo and docker-registry (extracted, not installed)
#
# Debian bookworm's packages (umoci 0.4.7, skopeo 1.9.3, docker-registry 2.8.2, with skopeo's
# libraries libgpgme11 and libassuan0) are fetched with `apt-get download` and unpacked into
# .tools/deb with `dpkg -x`: nothing is installed on the machine, and skopeo runs with
# LD_LIBRARY_PATH pointing there. PyPI and crates.io versions are pinned here.

RELEASE_PY_PACKAGES=(helm-python-sdk==0.2.2 oras==0.2.43 pyyaml==6.0.3 bcrypt==5.0.0)
CYCLONEDX_VERSION=0.5.9
RELEASE_DEBS=(umoci skopeo libgpgme11 libassuan0 docker-registry)
TOOLS_DIR="${TOOLS_DIR:-$PWD/.tools}"

release_tools() {
  mkdir -p "$TOOLS_DIR"
  local venv="$TOOLS_DIR/release-venv"
  if [ "$(cat "$venv/.pinned" 2>/dev/null)" != "${RELEASE_PY_PACKAGES[*]}" ]; then
    echo "installing ${RELEASE_PY_PACKAGES[*]} (PyPI) into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${RELEASE_PY_PACKAGES[@]}"
    echo "${RELEASE_PY_PACKAGES[*]}" >"$venv/.pinned"
  fi
  RELEASE_PY="$venv/bin/python"

  CYCLONEDX="$TOOLS_DIR/cargo-cyclonedx/bin/cargo-cyclonedx"
  if ! "$CYCLONEDX" cyclonedx --version 2>/dev/null | grep -q " $CYCLONEDX_VERSION$"; then
    echo "installing cargo-cyclonedx $CYCLONEDX_VERSION (crates.io) into $TOOLS_DIR/cargo-cyclonedx"
    cargo install --quiet --locked --force --root "$TOOLS_DIR/cargo-cyclonedx" cargo-cyclonedx --version "$CYCLONEDX_VERSION"
  fi

  local deb="$TOOLS_DIR/deb" missing=()
  for pkg in "${RELEASE_DEBS[@]}"; do
    [ -f "$deb/.$pkg" ] || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "fetching ${missing[*]} (Debian) into $deb"
    mkdir -p "$deb"
    ( cd "$deb" && { apt-get download "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get download "${missing[@]}" >/dev/null; }; } \
      && for pkg in "${missing[@]}"; do
           dpkg -x "${pkg}"_*.deb . && dpkg-deb -f "${pkg}"_*.deb Version >".$pkg" && rm -f "${pkg}"_*.deb
         done )
  fi
  UMOCI="$deb/usr/bin/umoci"
  SKOPEO="$deb/usr/bin/skopeo"
  REGISTRY="$deb/usr/bin/docker-registry"
  export LD_LIBRARY_PATH="$deb/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # skopeo wants a signature policy; Debian's default lives in a package not unpacked here. The
  # release pushes and pulls by digest; it verifies no signatures (there are none, see README).
  SKOPEO_POLICY="$TOOLS_DIR/deb/policy.json"
  [ -f "$SKOPEO_POLICY" ] || echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$SKOPEO_POLICY"
  export RELEASE_PY CYCLONEDX UMOCI SKOPEO REGISTRY SKOPEO_POLICY
}
