# Sourced by scripts/setup-lavapipe.sh and scripts/setup-cuda-llvm.sh: packages from Debian sid
# fetched with apt-get into a private work directory, so nothing is installed or configured
# system-wide. apt checks every package against Debian's signed archive index.
#
#   sid_apt_init WORK NAME     lists under WORK, downloads into WORK/debs; NAME prefixes messages
#   sid_version PACKAGE PINNED prints PINNED while sid still has it, else sid's current version
#                              (sid moves on) with a note on stderr
#   sid_download PACKAGE...    downloads into WORK/debs; on failure shows apt's log, returns 1

sid_apt_init() {
    sid_work=$1
    sid_name=$2
    echo "deb http://deb.debian.org/debian sid main" >"$sid_work/sources.list"
    mkdir -p "$sid_work/lists/partial" "$sid_work/debs"
    apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64
        "-oDir::Etc::SourceList=$sid_work/sources.list" -oDir::Etc::SourceParts=/dev/null
        "-oDir::State::Lists=$sid_work/lists" "-oDir::Cache::Archives=$sid_work/debs")
    apt-get "${apt_opts[@]}" update >"$sid_work/update.log" 2>&1 ||
        { cat "$sid_work/update.log" >&2; return 1; }
}

sid_version() {
    if apt-cache "${apt_opts[@]}" madison "$1" | grep -q " $2 "; then
        echo "$2"
        return 0
    fi
    local current
    current=$(apt-cache "${apt_opts[@]}" madison "$1" | awk 'NR==1{print $3}')
    [ -n "$current" ] || { echo "$sid_name: sid has no $1" >&2; return 1; }
    echo "$sid_name: $1 $2 is gone from sid; using $current" >&2
    echo "$current"
}

sid_download() {
    (cd "$sid_work/debs" && apt-get "${apt_opts[@]}" download "$@" >"$sid_work/download.log" 2>&1) &&
        return 0
    grep -v "unsandboxed" "$sid_work/download.log" >&2 || true
    return 1
}
