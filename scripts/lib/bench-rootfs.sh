# Sourced by the bench scripts: makes sure a real bookworm minbase root filesystem exists at
# $ROOTFS (default /var/cache/rmach-bench/bookworm-minbase), built once with debootstrap from
# the mirror of the host's apt sources, and sets MIRROR.
MIRROR=${MIRROR:-$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n' | grep -v security | head -n 1)}
if [ -z "$MIRROR" ]; then
    MIRROR=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null)
fi
ROOTFS=${ROOTFS:-/var/cache/rmach-bench/bookworm-minbase}
if [ ! -d "$ROOTFS" ]; then
    mkdir -p "$(dirname "$ROOTFS")"
    exec 9>"$ROOTFS.lock"
    flock 9
    if [ ! -d "$ROOTFS" ]; then
        echo "building $ROOTFS with debootstrap" >&2
        rm -rf "$ROOTFS.tmp"
        debootstrap --variant=minbase bookworm "$ROOTFS.tmp" "$MIRROR" >&2
        mv "$ROOTFS.tmp" "$ROOTFS"
    fi
    exec 9>&-
fi
