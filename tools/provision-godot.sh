#!/usr/bin/env bash
# provision-godot.sh — find or provision a Godot 4 binary for synctree.
#
# Usage:   tools/provision-godot.sh
# Output:  the LAST line on stdout is the absolute path of a working Godot 4
#          binary. Everything else (progress, warnings, errors) goes to stderr,
#          so callers can do:  GODOT="$(tools/provision-godot.sh | tail -n1)"
#
# Lookup order (the chosen source is reported on stderr):
#   1. $GODOT4_BIN, if set. It must exist and `--version` must report 4.x,
#      otherwise the script fails (no silent fallback: an explicit choice that
#      does not work is an error).
#   2. `godot` on PATH, if `godot --version` reports 4.x.
#   3. A private copy in a cache folder outside the repository:
#        ${SYNCTREE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/synctree}/godot
#      It is reused if already provisioned and working, otherwise (re)built.
#
# How provisioning works (and why):
#   Debian 12 only packages Godot 3. Debian unstable ("sid") packages Godot 4
#   (an editor build that can run --headless), but it needs a newer glibc than
#   the host has. We must NOT touch the host libc or the host apt setup, so:
#     * apt-get runs with a completely private configuration (own sources,
#       package lists, archive cache, an EMPTY dpkg status file, no host
#       apt.conf.d hooks). Because the status file is empty, apt resolves and
#       downloads the WHOLE dependency closure of `godot` (glibc included).
#       Only `--download-only` is used; nothing is installed anywhere.
#     * every downloaded .deb is unpacked with `dpkg -x` into one folder
#       (root/), i.e. a mini sid filesystem tree.
#     * the godot ELF gets its interpreter pointed at the unpacked sid dynamic
#       loader and its RPATH pointed ($ORIGIN-relative) at the unpacked library
#       folders, using a patchelf that is downloaded and unpacked the same way
#       (and run through the unpacked loader, so it needs nothing from the host).
#   The mirror is taken from the host's own apt sources at run time, so this
#   works wherever the host's Debian mirror works (no host names are baked in).
#
# Safety / idempotency:
#   * a lock file serialises concurrent runs;
#   * the tree is built in a temporary folder inside the cache and renamed
#     into place only after it passed a first smoke test;
#   * a marker file (PROVISIONED) is written last; a folder without a valid
#     marker or whose binary does not work is rebuilt on the next run;
#   * downloaded .debs survive an interrupted run (reused next time) and are
#     deleted after a successful one.
#
# Environment knobs:
#   GODOT4_BIN        explicit Godot 4 binary (see above)
#   SYNCTREE_CACHE    cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/synctree)
#   SYNCTREE_DEBIAN_MIRROR
#                     Debian mirror URI to use instead of the one read from
#                     the host's apt sources (rarely needed)
#
# Requirements on the host: bash, coreutils, apt-get, dpkg/dpkg-deb, flock,
# timeout, and the Debian archive keyring file (debian-archive-keyring).
# Works as root or as an ordinary user (apt only writes inside the cache).

set -euo pipefail

# ----------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------

log()  { printf '[provision-godot] %s\n' "$*" >&2; }
die()  { printf '[provision-godot] ERROR: %s\n' "$*" >&2; exit 1; }

# Everything temporary is registered here and removed on exit (also on Ctrl-C).
CLEANUP_PATHS=()
# shellcheck disable=SC2329  # invoked via trap
cleanup() {
    local p
    for p in "${CLEANUP_PATHS[@]+"${CLEANUP_PATHS[@]}"}"; do
        [[ -n "$p" && -e "$p" ]] && rm -rf -- "$p"
    done
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Neutral working directory for running Godot. IMPORTANT: Godot opens the
# project in the current directory if it contains project.godot, which could
# start a (slow, file-writing) import of the repo's project. Always run the
# probes from an empty folder.
PROBE_CWD="$(mktemp -d "${TMPDIR:-/tmp}/provision-godot-probe.XXXXXX")"
CLEANUP_PATHS+=("$PROBE_CWD")

# godot4_version BIN [LOADER]
#   Prints the version string reported by `BIN --version` and returns 0 if it
#   is a 4.x version; returns 1 otherwise. If LOADER is given, the binary is
#   started through that dynamic loader explicitly (used to test a freshly
#   built tree before its final interpreter path exists).
godot4_version() {
    local bin="$1" loader="${2:-}" out ver
    local -a cmd=("$bin")
    [[ -n "$loader" ]] && cmd=("$loader" "$bin")
    out="$(cd "$PROBE_CWD" && timeout 60 "${cmd[@]}" --version 2>/dev/null </dev/null)" || return 1
    # Godot prints e.g. "4.6.1.stable.debian"; take the last version-looking line.
    ver="$(printf '%s\n' "$out" | grep -E '^[0-9]+\.[0-9]+' | tail -n1 || true)"
    [[ -n "$ver" ]] || return 1
    printf '%s\n' "$ver"
    [[ "$ver" == 4.* ]]
}

# godot_headless_smoke BIN [LOADER]
#   Starts Godot headless and quits right away; must exit 0 within 60 s.
#   Godot's own output (ALSA/audio warnings etc.) is forwarded to stderr.
godot_headless_smoke() {
    local bin="$1" loader="${2:-}"
    local -a cmd=("$bin")
    [[ -n "$loader" ]] && cmd=("$loader" "$bin")
    (cd "$PROBE_CWD" && timeout 60 "${cmd[@]}" --headless --quit </dev/null 1>&2)
}

# emit BIN — print the result (the ONLY thing this script writes to stdout).
emit() {
    printf '%s\n' "$1"
    exit 0
}

# ----------------------------------------------------------------------------
# 1. $GODOT4_BIN
# ----------------------------------------------------------------------------

if [[ -n "${GODOT4_BIN:-}" ]]; then
    log "using \$GODOT4_BIN=$GODOT4_BIN"
    if [[ ! -e "$GODOT4_BIN" ]]; then
        die "\$GODOT4_BIN points to '$GODOT4_BIN', which does not exist. Unset GODOT4_BIN to let this script find or provision Godot 4 itself."
    fi
    if [[ -d "$GODOT4_BIN" || ! -x "$GODOT4_BIN" ]]; then
        die "\$GODOT4_BIN='$GODOT4_BIN' is not an executable file."
    fi
    if ! ver="$(godot4_version "$GODOT4_BIN")"; then
        die "\$GODOT4_BIN='$GODOT4_BIN' does not report a Godot 4.x version with --version (got: '${ver:-nothing/failed}')."
    fi
    log "\$GODOT4_BIN is Godot $ver"
    # Print an absolute path even if the variable held a relative one.
    bin_abs="$(cd "$(dirname -- "$GODOT4_BIN")" && pwd)/$(basename -- "$GODOT4_BIN")"
    emit "$bin_abs"
fi

# ----------------------------------------------------------------------------
# 2. godot on PATH
# ----------------------------------------------------------------------------

if path_godot="$(command -v godot 2>/dev/null)" && [[ -n "$path_godot" ]]; then
    if ver="$(godot4_version "$path_godot")"; then
        log "using godot from PATH: $path_godot (Godot $ver)"
        emit "$path_godot"
    else
        log "godot on PATH ($path_godot) is not Godot 4 (reports '${ver:-nothing}'); ignoring it"
    fi
else
    log "no godot on PATH"
fi

# ----------------------------------------------------------------------------
# 3. Cached / provisioned copy
# ----------------------------------------------------------------------------

CACHE_ROOT="${SYNCTREE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/synctree}"
mkdir -p -- "$CACHE_ROOT"
# Absolute, symlink-free path: the ELF interpreter path must be absolute.
CACHE_ROOT="$(cd -- "$CACHE_ROOT" && pwd -P)"
GODOT_DIR="$CACHE_ROOT/godot"        # final location of the provisioned tree
MARKER="$GODOT_DIR/PROVISIONED"      # written last; key=value lines
APT_WS="$CACHE_ROOT/apt-sid"         # private apt workspace (lists, .debs)

# Marker keys are read with sed (never sourced).
marker_get() { sed -n "s/^$1=//p" "$MARKER" 2>/dev/null | head -n1; }

# cached_bin — prints the binary path of an already provisioned tree, if the
# marker is present and the binary reports 4.x.
cached_bin() {
    [[ -f "$MARKER" ]] || return 1
    local rel bin ver
    rel="$(marker_get bin)"
    [[ -n "$rel" ]] || return 1
    bin="$GODOT_DIR/$rel"
    [[ -x "$bin" ]] || return 1
    ver="$(godot4_version "$bin")" || return 1
    printf '%s\t%s\n' "$bin" "$ver"
}

log "cache folder: $GODOT_DIR"
if hit="$(cached_bin)"; then
    log "using provisioned Godot ${hit#*$'\t'} from the cache"
    emit "${hit%%$'\t'*}"
fi

# Serialise concurrent runs (e.g. two test suites starting at once).
exec 9>"$CACHE_ROOT/godot.lock"
if ! flock -n 9; then
    log "another provisioning run holds $CACHE_ROOT/godot.lock; waiting for it..."
    flock 9
fi
# Another run may have finished provisioning while we waited.
if hit="$(cached_bin)"; then
    log "using provisioned Godot ${hit#*$'\t'} from the cache (provisioned by a concurrent run)"
    emit "${hit%%$'\t'*}"
fi

if [[ -e "$GODOT_DIR" ]]; then
    log "cache folder exists but does not hold a working Godot 4 (interrupted run or moved cache?); re-provisioning"
else
    log "no provisioned Godot yet; provisioning Godot 4 from Debian sid (download ~200 MB, unpacked ~560 MB; usually well under a minute)"
fi

# Leftovers of runs that were killed hard (SIGKILL, power loss).
rm -rf -- "$CACHE_ROOT"/godot.tmp.* "$CACHE_ROOT"/godot.old.*

for tool in apt-get dpkg dpkg-deb flock timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "required tool '$tool' not found on this host (a Debian-based system is needed to provision Godot)"
done

KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -r "$KEYRING" ]] || die "$KEYRING not found; the host needs the 'debian-archive-keyring' package to verify Debian sid downloads"

# Native architecture → multiarch triplet and dynamic loader name.
DEB_ARCH="$(dpkg --print-architecture)"
case "$DEB_ARCH" in
    amd64) TRIPLET=x86_64-linux-gnu;   LOADER_NAME=ld-linux-x86-64.so.2 ;;
    arm64) TRIPLET=aarch64-linux-gnu;  LOADER_NAME=ld-linux-aarch64.so.1 ;;
    *) die "unsupported architecture '$DEB_ARCH' (only amd64 and arm64 are handled)" ;;
esac

# ---- Mirror: the same URI the host's apt uses ------------------------------
# Read the first URIs: value from the host's deb822 sources file (fallback:
# the first plain `deb` line of the classic sources.list).
find_mirror() {
    local f=/etc/apt/sources.list.d/debian.sources uri=""
    if [[ -r "$f" ]]; then
        uri="$(awk 'tolower($1)=="uris:" { print $2; exit }' "$f")"
    fi
    if [[ -z "$uri" && -r /etc/apt/sources.list ]]; then
        uri="$(awk '$1=="deb" { for (i=2;i<=NF;i++) if ($i !~ /^\[/ && $i !~ /\]$/ && $i ~ /:\/\//) { print $i; exit } }' /etc/apt/sources.list)"
    fi
    printf '%s\n' "$uri"
}
MIRROR="${SYNCTREE_DEBIAN_MIRROR:-$(find_mirror)}"
[[ -n "$MIRROR" ]] || die "could not read a Debian mirror URI from /etc/apt/sources.list.d/debian.sources (first 'URIs:' line); set SYNCTREE_DEBIAN_MIRROR"
log "Debian mirror (from host apt sources): $MIRROR, suite sid"

# ---- Private apt configuration ---------------------------------------------
# All apt state lives in $APT_WS. Passed via APT_CONFIG, which apt reads
# BEFORE apt.conf.d; since it redirects Dir::Etc::Parts/Main to private
# (empty) locations, no host apt.conf.d snippet is read at all — important
# because e.g. Docker images ship APT::Update::Post-Invoke hooks that would
# otherwise run against the host's /var/cache/apt.
mkdir -p -- "$APT_WS"/{etc/sources.list.d,etc/apt.conf.d,etc/preferences.d,etc/trusted.gpg.d,state/lists/partial,cache/archives/partial,log}
: > "$APT_WS/etc/sources.list"          # no classic sources
: > "$APT_WS/state/status"              # EMPTY dpkg status → full closure
cat > "$APT_WS/etc/sources.list.d/sid.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: sid
Components: main
Signed-By: $KEYRING
EOF

APT_CONF="$APT_WS/apt.conf"
{
    echo "// Generated by provision-godot.sh — private apt setup, never used for the host."
    echo "Dir::Etc::Main \"/dev/null\";"
    echo "Dir::Etc::Parts \"$APT_WS/etc/apt.conf.d\";"
    echo "Dir::Etc::SourceList \"$APT_WS/etc/sources.list\";"
    echo "Dir::Etc::SourceParts \"$APT_WS/etc/sources.list.d\";"
    echo "Dir::Etc::Preferences \"$APT_WS/etc/preferences\";"
    echo "Dir::Etc::PreferencesParts \"$APT_WS/etc/preferences.d\";"
    echo "Dir::Etc::Trusted \"$APT_WS/etc/trusted.gpg\";"
    echo "Dir::Etc::TrustedParts \"$APT_WS/etc/trusted.gpg.d\";"
    echo "Dir::State \"$APT_WS/state\";"
    echo "Dir::State::Lists \"$APT_WS/state/lists\";"
    echo "Dir::State::status \"$APT_WS/state/status\";"
    echo "Dir::Cache \"$APT_WS/cache\";"
    echo "Dir::Cache::Archives \"$APT_WS/cache/archives\";"
    echo "Dir::Log \"$APT_WS/log\";"
    # Download as the current user (as root the default "_apt" user could not
    # write into a cache under root's home directory).
    echo "APT::Sandbox::User \"$(id -un)\";"
    echo "APT::Architecture \"$DEB_ARCH\";"
    echo "APT::Architectures { \"$DEB_ARCH\"; };"
    echo "APT::Install-Recommends \"false\";"
    echo "APT::Install-Suggests \"false\";"
    # The mirror's sid Release file may be older than the clock (snapshots).
    echo "Acquire::Check-Valid-Until \"false\";"
    echo "Acquire::Check-Date \"false\";"
    echo "Acquire::Languages \"none\";"
    # Keep the host's proxy settings (only those) so downloads go the same way.
    apt-config dump 2>/dev/null | grep -E '^Acquire::[A-Za-z]+::Proxy' || true
} > "$APT_CONF"

papt() { APT_CONFIG="$APT_CONF" apt-get "$@"; }

PKGS=(godot patchelf)

log "[1/5] apt-get update (private sid package lists)..."
papt update 1>&2 || die "apt-get update with the private sid configuration failed (see above)"

# The exact package closure (name, version, arch) from a simulation; this also
# tells us which .debs in the (possibly reused) archive folder belong to it.
SIM="$(papt install -s -y "${PKGS[@]}" 2>&1)" || { printf '%s\n' "$SIM" >&2; die "apt cannot resolve ${PKGS[*]} from sid"; }
mapfile -t CLOSURE < <(printf '%s\n' "$SIM" | sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) .*\[\([^]]*\)\]).*$/\1 \2 \3/p')
((${#CLOSURE[@]} > 0)) || { printf '%s\n' "$SIM" >&2; die "could not parse the package list from apt's simulation"; }
GODOT_PKG_VERSION="$(printf '%s\n' "${CLOSURE[@]}" | awk '$1=="godot" || $1=="godot:'"$DEB_ARCH"'" {print $2; exit}')"
log "sid godot package: ${GODOT_PKG_VERSION:-?}; ${#CLOSURE[@]} packages in its dependency closure (plus patchelf)"

log "[2/5] downloading .debs (download-only, nothing is installed)..."
papt install --download-only -y "${PKGS[@]}" 1>&2 || die "downloading the sid packages failed (see above); re-run to resume"

# ---- Build the tree in a temporary folder inside the cache ------------------
BUILD="$(mktemp -d "$CACHE_ROOT/godot.tmp.XXXXXX")"
CLEANUP_PATHS+=("$BUILD")
chmod 755 "$BUILD"                    # mktemp creates it 0700
ROOT="$BUILD/root"
mkdir -p -- "$ROOT"

log "[3/5] unpacking ${#CLOSURE[@]} packages with dpkg -x..."
n=0
for entry in "${CLOSURE[@]}"; do
    read -r name version arch <<<"$entry"
    name="${name%%:*}"
    # apt stores "epoch:version" as "epoch%3aversion" in archive file names.
    deb="$APT_WS/cache/archives/${name}_${version//:/%3a}_${arch}.deb"
    [[ -f "$deb" ]] || die "expected downloaded package $deb is missing"
    dpkg -x "$deb" "$ROOT" || die "dpkg -x failed for $deb"
    n=$((n + 1))
    if ((n % 25 == 0)); then log "  unpacked $n/${#CLOSURE[@]}"; fi
done
log "  unpacked $n/${#CLOSURE[@]}"
# Documentation is useless here and large.
rm -rf -- "$ROOT"/usr/share/{doc,man,info,lintian,bug}

# ---- Locate the pieces -------------------------------------------------------
# resolve_in_root PATH — follow symlinks inside ROOT (absolute link targets are
# interpreted relative to ROOT, as they would be on an installed system).
resolve_in_root() {
    local p="$1" t
    for _ in $(seq 1 20); do   # bounded, in case of symlink loops
        [[ -L "$p" ]] || break
        t="$(readlink -- "$p")"
        if [[ "$t" == /* ]]; then p="$ROOT$t"; else p="$(dirname -- "$p")/$t"; fi
    done
    realpath -m -- "$p"
}

# Dynamic loader: prefer the real file from the multiarch lib folder.
LOADER_TMP=""
for cand in "$ROOT/usr/lib/$TRIPLET/$LOADER_NAME" "$ROOT/lib/$TRIPLET/$LOADER_NAME" \
            "$ROOT/usr/lib64/$LOADER_NAME" "$ROOT/lib64/$LOADER_NAME" "$ROOT/lib/$LOADER_NAME"; do
    if [[ -e "$cand" || -L "$cand" ]]; then
        r="$(resolve_in_root "$cand")"
        if [[ -f "$r" ]]; then LOADER_TMP="$r"; break; fi
    fi
done
if [[ -z "$LOADER_TMP" ]]; then
    LOADER_TMP="$(find "$ROOT" -name "$LOADER_NAME" -type f -print -quit)"
fi
[[ -n "$LOADER_TMP" ]] || die "unpacked dynamic loader $LOADER_NAME not found in the sid tree"
chmod +x "$LOADER_TMP"

# Library folders (only those that exist), plus their pulseaudio/ subfolders.
LIBDIRS_TMP=()
for d in "$ROOT/usr/lib/$TRIPLET" "$ROOT/lib/$TRIPLET" "$ROOT/usr/lib" "$ROOT/lib"; do
    [[ -d "$d" && ! -L "$d" ]] || continue
    LIBDIRS_TMP+=("$d")
    [[ -d "$d/pulseaudio" ]] && LIBDIRS_TMP+=("$d/pulseaudio")
done
LIBPATH_TMP="$(IFS=:; echo "${LIBDIRS_TMP[*]}")"

# The godot executable (usr/bin/godot may be a symlink into usr/lib).
GODOT_TMP=""
for cand in "$ROOT/usr/bin/godot" "$ROOT/usr/bin/godot4" "$ROOT/usr/games/godot"; do
    if [[ -e "$cand" || -L "$cand" ]]; then
        r="$(resolve_in_root "$cand")"
        if [[ -f "$r" ]]; then GODOT_TMP="$r"; break; fi
    fi
done
[[ -n "$GODOT_TMP" ]] || die "godot executable not found in the unpacked sid tree (looked in usr/bin, usr/games)"
GODOT_REL="${GODOT_TMP#"$BUILD"/}"     # path relative to the tree root folder
log "godot binary inside the tree: $GODOT_REL"

# patchelf from the tree, run through the sid loader with the sid libraries
# (it is linked against the sid libc/libstdc++, which the host may not have).
PATCHELF_TMP="$(resolve_in_root "$ROOT/usr/bin/patchelf")"
[[ -f "$PATCHELF_TMP" ]] || die "patchelf not found in the unpacked sid tree"
patchelf() { "$LOADER_TMP" --library-path "$LIBPATH_TMP" "$PATCHELF_TMP" "$@"; }
patchelf --version >/dev/null 2>&1 || die "the unpacked patchelf does not run (tried: $LOADER_TMP --library-path ... $PATCHELF_TMP --version)"

log "[4/5] patching ELF files..."
# RPATH of godot: $ORIGIN-relative, so the tree can be renamed into place.
# DT_RPATH (--force-rpath) rather than DT_RUNPATH: DT_RPATH of the executable
# is also searched for the dependencies OF the libraries (DT_RUNPATH is only
# used for the executable's direct dependencies), so the whole closure comes
# from the tree instead of the host's older libraries.
bindir="$(dirname -- "$GODOT_TMP")"
rpath=""
for d in "${LIBDIRS_TMP[@]}"; do
    rpath="${rpath:+$rpath:}\$ORIGIN/$(realpath -m --relative-to="$bindir" -- "$d")"
done
# Interpreter: absolute path of the loader at its FINAL location (PT_INTERP
# cannot be relative). It does not exist yet; the smoke test below therefore
# starts godot through the temporary loader explicitly.
LOADER_FINAL="$GODOT_DIR/${LOADER_TMP#"$BUILD"/}"
patchelf --set-interpreter "$LOADER_FINAL" --force-rpath --set-rpath "$rpath" "$GODOT_TMP" \
    || die "patchelf failed on $GODOT_TMP"
log "  $GODOT_REL: interpreter=$LOADER_FINAL"
log "  $GODOT_REL: rpath=$rpath"

# Libraries carrying their own absolute RUNPATH into the system lib folder
# (libpulse.so.0 → /usr/lib/<triplet>/pulseaudio) would make the loader look
# at the HOST's folders, and a RUNPATH also disables the executable's DT_RPATH
# for that library's dependencies. Rewrite them to $ORIGIN-relative paths.
for d in "${LIBDIRS_TMP[@]}"; do
    for so in "$d"/*.so*; do
        [[ -f "$so" && ! -L "$so" ]] || continue
        rp="$(patchelf --print-rpath "$so" 2>/dev/null)" || continue
        [[ -n "$rp" && "$rp" == *"/lib"* && "$rp" != *"\$ORIGIN"* ]] || continue
        new=""
        IFS=: read -r -a parts <<<"$rp"
        for p in "${parts[@]}"; do
            [[ "$p" == /* ]] || { new="${new:+$new:}$p"; continue; }
            # (paths are compared as they would be on an installed system)
            rel="$(realpath -m --relative-to="$(dirname -- "${so#"$ROOT"}")" -- "$p")"
            if [[ "$rel" == . ]]; then rel="\$ORIGIN"; else rel="\$ORIGIN/$rel"; fi
            new="${new:+$new:}$rel"
        done
        patchelf --set-rpath "$new" "$so" || die "patchelf --set-rpath failed on $so"
        log "  ${so#"$ROOT"/}: runpath '$rp' -> '$new'"
    done
done

# Missing libraries would show up as "not found" in the loader's --list.
missing="$(cd "$PROBE_CWD" && "$LOADER_TMP" --list "$GODOT_TMP" 2>&1 | grep 'not found' || true)"
[[ -z "$missing" ]] || { printf '%s\n' "$missing" >&2; die "godot has unresolved libraries in the sid tree"; }

log "[5/5] smoke test and install into the cache..."
ver="$(godot4_version "$GODOT_TMP" "$LOADER_TMP")" \
    || die "the patched godot does not report a 4.x version (got: '${ver:-nothing}'); try: $LOADER_TMP $GODOT_TMP --version"

# Move into place. When no previous tree exists this is a single atomic
# rename; an old (broken) tree is moved aside first and deleted afterwards.
if [[ -e "$GODOT_DIR" ]]; then
    OLD="$CACHE_ROOT/godot.old.$$"
    CLEANUP_PATHS+=("$OLD")
    mv -T -- "$GODOT_DIR" "$OLD"
fi
mv -T -- "$BUILD" "$GODOT_DIR"
GODOT_BIN="$GODOT_DIR/$GODOT_REL"

# Final verification with the real interpreter path.
ver="$(godot4_version "$GODOT_BIN")" || die "provisioned $GODOT_BIN does not report 4.x with --version"
log "Godot $ver: running '$GODOT_BIN --headless --quit' (audio/ALSA warnings are harmless)..."
if ! godot_headless_smoke "$GODOT_BIN"; then
    die "'$GODOT_BIN --headless --quit' failed or timed out; the cache is left in place for inspection and will be rebuilt on the next run"
fi

# Marker last: only a fully verified tree is ever reused.
{
    echo "bin=$GODOT_REL"
    echo "godot_version=$ver"
    echo "debian_package=godot ${GODOT_PKG_VERSION:-unknown} (sid)"
    echo "mirror=$MIRROR"
    echo "provisioned_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$MARKER.tmp"
mv -f -- "$MARKER.tmp" "$MARKER"

# The downloaded .debs are no longer needed (they are kept only while a run
# is incomplete, so an interrupted download can resume).
rm -rf -- "$APT_WS"

log "provisioned Godot $ver at $GODOT_BIN"
emit "$GODOT_BIN"
