# Sourced by the benchmarks that run systemd-nspawn. Without a systemd PID 1, nspawn makes its
# `payload` and `supervisor` cgroups below the cgroup it starts in, which for a script run from a
# shell is the root of each hierarchy: they would outlive the benchmark. So the script moves
# itself (and so everything it starts) into a cgroup of its own in the hierarchies nspawn uses,
# and removes that cgroup, with what nspawn made below it, when it exits.
# Usage: source scripts/lib/own-cgroup.sh; own_cgroup_enter; trap '...; own_cgroup_leave' EXIT
own_cgroup_name=rmach-bench-$$
own_cgroup_roots=
own_cgroup_enter() {
    local h
    for h in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do
        [ -e "$h/cgroup.procs" ] || continue
        mkdir "$h/$own_cgroup_name" && echo $$ >"$h/$own_cgroup_name/cgroup.procs" &&
            own_cgroup_roots="$own_cgroup_roots $h"
    done
}
own_cgroup_leave() {
    local h
    for h in $own_cgroup_roots; do
        echo $$ >"$h/cgroup.procs"
        find "$h/$own_cgroup_name" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
}
