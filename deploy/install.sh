#!/bin/bash
# Install netplumb from this checkout as a systemd service, or remove it.
# Run as root on Debian; `deploy/install.sh --help` explains.
set -euo pipefail
# The virtualenv is made by venv and pip, which follow the umask: members of
# the group netplumb run the netplumb command from it.
umask 022

usage() {
    cat <<'EOF'
usage: deploy/install.sh [--root DIR]
       deploy/install.sh --uninstall [--purge] [--root DIR]

Installs netplumb from this checkout (as root):
  /opt/netplumb/venv-<UTC time>         a virtualenv with netplumb and its pinned
                                        dependencies (a normal install, not editable),
                                        a new one for every install
  /opt/netplumb/venv                    a link to the virtualenv in use: the unit and
                                        the commands go through it
  /opt/netplumb/README.md, docs/        the documentation the unit points to
  /usr/local/bin/netplumbd, netplumb, pipework
                                        links into /opt/netplumb/venv/bin
  /etc/systemd/system/netplumbd.service the unit (then 'systemctl daemon-reload'
                                        if systemd runs, and a restart of a running
                                        netplumbd, so an upgrade takes effect)
  /etc/netplumb/netplumbd.toml          the commented default configuration, only if
                                        there is none (yours is never overwritten)
  group netplumb                        a system group: its members may use the socket

Running it again upgrades the installation to this checkout, never touching
the virtualenv a running netplumbd uses: the new version is built in a new
/opt/netplumb/venv-<UTC time>, and its netplumbd checks the configuration in
use (--check-config). If that fails, the new directory is removed, nothing
else has changed (the previous version stays installed, and running) and the
exit status is 1: fix the configuration and run this again. If it passes, the
files are updated, the link /opt/netplumb/venv is switched to the new
directory in one step (a rename), a running netplumbd is restarted, and the
older venv-* directories are removed, except one that a process still runs
from (a netplumbd started by hand: restart it, then run this again). No older
version is kept: to go back, run install.sh from that version's checkout.
Only one install.sh runs at a time (a lock in /opt/netplumb).

  --uninstall  remove what the install made (every venv-* directory included);
               keeps the configuration, the state (/var/lib/netplumb) and the
               group, so a reinstall carries on
  --purge      with --uninstall: also remove /etc/netplumb/netplumbd.toml,
               /var/lib/netplumb and the group. Bridges and interfaces netplumb
               made stay on the host: detach and delete them first if they must go
  --root DIR   install into DIR instead of / (a scratch root for tests): every
               path above is put under DIR and every path written into the
               files points there, so the copy runs as it is. The group goes
               into DIR/etc/group (groupadd --prefix); systemctl is not used.

examples:
  make install                            # the same as deploy/install.sh
  systemctl enable --now netplumbd        # then start it, now and at boot
  usermod -aG netplumb alice              # let alice use the netplumb command
  readlink /opt/netplumb/venv             # the virtualenv in use, e.g. venv-20250102T030405Z
  make uninstall                          # deploy/install.sh --uninstall
  deploy/install.sh --uninstall --purge   # everything, configuration and state too
  deploy/install.sh --root /tmp/np-root   # a scratch installation

environment: PYTHON (default /usr/bin/python3; 3.11 or newer, installed outside
/root, /home and /tmp, which the unit hides) builds the virtualenv.

exit status: 0 done; 1 refused or failed (the message says why and what to do).
EOF
}

die() {
    echo "install.sh: $*" >&2
    exit 1
}

ROOT=""
MODE=install
PURGE=0
while [ $# -gt 0 ]; do
    case "$1" in
    --root)
        [ $# -ge 2 ] || die "--root needs a directory, e.g. --root /tmp/np-root"
        ROOT=$2
        shift 2
        ;;
    --root=*)
        ROOT=${1#--root=}
        shift
        ;;
    --uninstall) MODE=uninstall && shift ;;
    --purge) PURGE=1 && shift ;;
    -h | --help) usage && exit 0 ;;
    *) die "unknown argument '$1' (see deploy/install.sh --help)" ;;
    esac
done
[ "$PURGE" = 0 ] || [ "$MODE" = uninstall ] || die "--purge goes with --uninstall"
if [ -n "$ROOT" ]; then
    case "$ROOT" in
    /*) ;;
    *) die "--root wants an absolute path, not '$ROOT'" ;;
    esac
    ROOT=$(realpath -m "$ROOT")
    [ "$ROOT" != / ] || ROOT=""
fi
if [ "$(id -u)" != 0 ]; then
    die "run as root (it installs into /opt, /usr/local/bin and /etc and creates a group): sudo $0 $*"
fi

SRC=$(cd "$(dirname "$0")/.." && pwd)
OPT=$ROOT/opt/netplumb
VENV=$OPT/venv
BIN=$ROOT/usr/local/bin
ETC=$ROOT/etc/netplumb
CONFIG=$ETC/netplumbd.toml
UNIT_DIR=$ROOT/etc/systemd/system
UNIT=$UNIT_DIR/netplumbd.service
STATE=$ROOT/var/lib/netplumb
GROUP=netplumb
COMMANDS=(netplumbd netplumb pipework)
# Directories outside $OPT that the install made, for the uninstall to take away.
MADE=$OPT/.made-dirs

# systemctl only for the real root, and only where systemd is PID 1 (sd_booted).
with_systemd() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }

# A link in $BIN that this script made: it points into our virtualenv.
ours() { [ -L "$1" ] && [ "$(readlink "$1")" = "$VENV/bin/$(basename "$1")" ]; }

# mkdir -p that notes the directories it made in $MADE ($OPT is made first).
mkdirs() {
    local d=$1 missing=()
    while [ ! -d "$d" ]; do
        missing=("$d" "${missing[@]}")
        d=$(dirname "$d")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    install -d -m 0755 "$1"
    for d in "${missing[@]}"; do
        case "$d" in
        "$OPT" | "$OPT"/*) ;;
        *) echo "$d" >>"$MADE" ;;
        esac
    done
}

group_cmd() {
    # groupadd/groupdel write DIR/etc/group (and gshadow) with --prefix.
    local cmd=$1
    shift
    if [ -n "$ROOT" ]; then
        "$cmd" --prefix "$ROOT" "$@"
    else
        "$cmd" "$@"
    fi
}

has_group() {
    if [ -n "$ROOT" ]; then
        grep -q "^$GROUP:" "$ROOT/etc/group" 2>/dev/null
    else
        getent group "$GROUP" >/dev/null
    fi
}

# Only one install.sh at a time: another one's new virtualenv is not ours to
# sweep. The lock is on a file in $OPT, released when this script exits.
lock() {
    exec 9>>"$OPT/.lock"
    flock -n 9 || die "another deploy/install.sh is running (it holds $OPT/.lock): wait for it, then run this again"
}

# PIDs of the processes whose program runs from directory $1: argv[0], which
# for a script of a virtualenv is the interpreter its shebang names.
running_from() {
    local f argv0 pids=()
    for f in /proc/[0-9]*/cmdline; do
        IFS= read -r -d '' argv0 2>/dev/null <"$f" || continue
        case "$argv0" in
        "$1"/*)
            f=${f#/proc/}
            pids+=("${f%/cmdline}")
            ;;
        esac
    done
    echo "${pids[*]}"
}

# A new directory $OPT/venv-<UTC time> (-2, -3... should that one exist).
new_venv_dir() {
    local stamp dir n=1
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    dir=$OPT/venv-$stamp
    until mkdir -m 0755 "$dir" 2>/dev/null; do
        [ -e "$dir" ] || die "cannot make $dir (see above)"
        n=$((n + 1))
        dir=$OPT/venv-$stamp-$n
    done
    echo "$dir"
}

# Makes $VENV a link to $1 in one rename(2), which replaces a link but not a
# directory: a virtualenv of the old layout, a directory at $VENV, is first
# renamed aside (for the instant between the two renames $VENV is missing)
# and swept with the other old ones.
switch_to() {
    local target=$1 tmp_link=$OPT/venv.tmp
    if [ -d "$VENV" ] && [ ! -L "$VENV" ]; then
        rm -rf "$OPT/venv-old"
        mv -T "$VENV" "$OPT/venv-old"
    fi
    ln -sfn "$(basename "$target")" "$tmp_link"
    mv -T "$tmp_link" "$VENV"
}

# Removes the virtualenvs in $OPT other than $1 (the one $VENV now points
# to), except one a process still runs from (a netplumbd started by hand,
# whose late imports would fail).
sweep() {
    local keep=$1 dir pids
    for dir in "$OPT"/venv-*; do
        [ -d "$dir" ] && [ ! -L "$dir" ] && [ "$dir" != "$keep" ] || continue
        pids=$(running_from "$dir")
        if [ -n "$pids" ]; then
            echo "kept $dir: process $pids still runs from it (ps -fp ${pids// /,})." \
                "Restart it (a netplumbd then runs the new version); the next install removes $dir, or rm -rf it"
        else
            rm -rf "$dir"
            echo "removed the previous virtualenv $dir"
        fi
    done
}

# Removes $OPT and the directories outside it that the install made.
remove_opt() {
    local dirs=() i
    [ ! -f "$MADE" ] || mapfile -t dirs <"$MADE"
    rm -rf "$OPT"
    for ((i = ${#dirs[@]} - 1; i >= 0; i--)); do
        rmdir "${dirs[i]}" 2>/dev/null || true # gone, or holds other files
    done
}

# On the way out of install_all: the copy of the sources, a new virtualenv
# that did not become the one in use, and $OPT itself if this first install
# failed before it changed anything else.
TMP=""
NEW=""
SWITCHED=0
FIRST=0
CHECKED=0
on_exit() {
    [ -z "$TMP" ] || rm -rf "$TMP"
    if [ -n "$NEW" ] && [ "$SWITCHED" = 0 ]; then
        rm -rf "$NEW"
    fi
    if [ "$FIRST" = 1 ] && [ "$CHECKED" = 0 ]; then
        remove_opt
    fi
}

install_all() {
    # The system's Python by default, not whatever python3 comes first on
    # root's PATH (pyenv and the like live in /root, which the unit hides).
    local python=${PYTHON:-/usr/bin/python3}
    command -v "$python" >/dev/null || die "$python not found: apt-get install python3 python3-venv (or set PYTHON)"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "$python is $("$python" -V 2>&1); netplumb needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)"
    local exe base
    read -r exe base < <("$python" -c 'import os, sys; print(os.path.realpath(sys.executable), os.path.realpath(sys.base_prefix))')
    for p in "$exe" "$base"; do
        case "$p/" in
        /root/* | /home/* | /tmp/* | /var/tmp/* | /run/user/*)
            die "$python lives in $p, which the unit hides from the service (ProtectHome=, PrivateTmp=):" \
                "use a Python installed for the system (PYTHON=/usr/bin/python3)"
            ;;
        esac
    done
    "$python" -c 'import ensurepip, venv' 2>/dev/null ||
        die "$python cannot make virtualenvs: apt-get install python3-venv"
    for c in "${COMMANDS[@]}"; do
        if [ -e "$BIN/$c" ] || [ -L "$BIN/$c" ]; then
            ours "$BIN/$c" || die "$BIN/$c exists and is not netplumb's: move it aside" \
                "(e.g. mv $BIN/$c $BIN/$c.orig) and run this again"
        fi
    done
    if [ -f "$UNIT" ] && ! grep -qF "ExecStart=$VENV/bin/netplumbd " "$UNIT"; then
        die "$UNIT exists and does not run $VENV/bin/netplumbd: move it aside and run this again"
    fi

    if [ -e "$VENV" ] && [ ! -L "$VENV" ] && [ ! -d "$VENV" ]; then
        die "$VENV is neither a directory nor a link: move it aside and run this again"
    fi

    local first=0
    [ -d "$OPT" ] || first=1
    mkdirs "$OPT"
    lock
    FIRST=$first
    trap on_exit EXIT
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM

    # Built at its final path: the scripts' shebangs name it. The one in use,
    # which a running netplumbd imports from, is not touched.
    NEW=$(new_venv_dir)
    echo "making the virtualenv $NEW (Python $("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])'))"
    "$python" -m venv "$NEW"

    # Built from a copy, so that the build leaves nothing in the checkout
    # (setuptools writes build/ and *.egg-info next to the sources).
    TMP=$(mktemp -d)
    mkdir "$TMP/src"
    tar -C "$SRC" --exclude=__pycache__ --exclude='*.pyc' -cf - pyproject.toml README.md agent cli proto |
        tar -C "$TMP/src" -xf -
    echo "installing netplumb from $SRC and its pinned dependencies into $NEW"
    # Into an empty virtualenv: netplumb and its dependencies at their pins.
    "$NEW/bin/python" -m pip install -q --disable-pip-version-check "$TMP/src"

    # The configuration in use (or the default one about to be installed),
    # read by the new version (an upgrade may meet a key it does not take)
    # before anything else changes.
    local config=$CONFIG unchanged="nothing was installed"
    [ -e "$config" ] || config=$SRC/deploy/config/netplumbd.toml
    if [ -e "$VENV" ]; then
        unchanged="nothing was changed: the installed version stays in use ($VENV is $(readlink -f "$VENV"))"
    fi
    "$NEW/bin/netplumbd" --check-config --config "$config" >/dev/null ||
        die "$config does not suit the netplumb of $SRC (see above), so $unchanged." \
            "Fix the file (every key is in $SRC/docs/configuration.md; this version's default:" \
            "$SRC/deploy/config/netplumbd.toml), then run this again"
    CHECKED=1

    # The documentation the unit's Documentation= points to, and the default
    # configuration of this version, for comparison with the one in use.
    install -m 0644 "$SRC/README.md" "$OPT/README.md"
    rm -rf "$OPT/docs"
    install -d -m 0755 "$OPT/docs"
    install -m 0644 "$SRC"/docs/*.md "$OPT/docs/"
    install -m 0644 "$SRC/deploy/config/netplumbd.toml" "$OPT/netplumbd.toml.default"

    mkdirs "$BIN"
    for c in "${COMMANDS[@]}"; do
        ln -sfn "$VENV/bin/$c" "$BIN/$c"
    done
    echo "linked ${COMMANDS[*]} in $BIN"

    mkdirs "$ETC"
    if [ -e "$CONFIG" ]; then
        echo "kept $CONFIG (this version's default: $OPT/netplumbd.toml.default)"
    else
        install -m 0644 "$SRC/deploy/config/netplumbd.toml" "$CONFIG"
        echo "installed $CONFIG (every key commented out: the defaults)"
    fi

    mkdirs "$UNIT_DIR"
    local unit_text
    unit_text=$(<"$SRC/deploy/systemd/netplumbd.service")
    if [ -n "$ROOT" ]; then
        unit_text=${unit_text//\/opt\/netplumb/"$ROOT/opt/netplumb"}
        unit_text=${unit_text//\/etc\/netplumb\//"$ROOT/etc/netplumb/"}
    fi
    printf '%s\n' "$unit_text" >"$UNIT.tmp"
    chmod 0644 "$UNIT.tmp"
    mv -f "$UNIT.tmp" "$UNIT"
    echo "installed $UNIT"

    if has_group; then
        echo "group $GROUP exists"
    else
        group_cmd groupadd --system "$GROUP"
        echo "created the system group $GROUP (its members may use the netplumb socket)"
    fi

    switch_to "$NEW"
    SWITCHED=1
    echo "$VENV is now $NEW"
    if [ -n "$ROOT" ]; then
        echo "installed into $ROOT"
    elif with_systemd; then
        systemctl daemon-reload
        if systemctl is-active -q netplumbd.service; then
            systemctl restart netplumbd.service
            echo "restarted netplumbd on the new version"
        else
            echo "start it, now and at boot: systemctl enable --now netplumbd"
        fi
    else
        echo "systemd is not running here; start the daemon yourself: netplumbd --config $CONFIG &"
    fi
    sweep "$NEW"
}

uninstall_all() {
    [ ! -d "$OPT" ] || lock
    if with_systemd && [ -f "$UNIT" ]; then
        systemctl disable --now netplumbd.service || true
        echo "stopped and disabled netplumbd (the bridges and interfaces it made stay)"
    fi
    local wants=$UNIT_DIR/multi-user.target.wants/netplumbd.service
    if [ -L "$wants" ] && [ "$(readlink "$wants")" = "$UNIT" ]; then
        rm -f "$wants"
        rmdir --ignore-fail-on-non-empty "$UNIT_DIR/multi-user.target.wants"
    fi
    if [ -f "$UNIT" ]; then
        if grep -qF "ExecStart=$VENV/bin/netplumbd " "$UNIT"; then
            rm -f "$UNIT"
            echo "removed $UNIT"
        else
            echo "kept $UNIT: it does not run $VENV/bin/netplumbd, so it is not this installation's" >&2
        fi
    fi
    if [ "$PURGE" = 1 ] && [ -d "$UNIT.d" ]; then
        rm -rf "$UNIT.d"
        echo "removed $UNIT.d"
    fi
    if with_systemd; then
        systemctl daemon-reload
    fi
    for c in "${COMMANDS[@]}"; do
        if ours "$BIN/$c"; then
            rm -f "$BIN/$c"
        fi
    done
    if [ -d "$OPT" ]; then
        remove_opt
        echo "removed $OPT (every virtualenv in it) and the links in $BIN"
    fi
    if [ "$PURGE" = 0 ]; then
        [ ! -e "$CONFIG" ] || echo "kept $CONFIG, $STATE and the group $GROUP (--purge removes them)"
        return
    fi
    if [ -e "$CONFIG" ]; then
        rm -f "$CONFIG"
        echo "removed $CONFIG"
    fi
    if [ -d "$ETC" ]; then
        if rmdir "$ETC" 2>/dev/null; then
            echo "removed $ETC"
        else
            echo "kept $ETC: it holds files netplumb did not install ($(ls -A "$ETC" | tr '\n' ' '))"
        fi
    fi
    if [ -d "$STATE" ]; then
        rm -rf "$STATE"
        echo "removed $STATE (bridges and interfaces netplumb made are still on the host)"
    fi
    if has_group; then
        group_cmd groupdel "$GROUP"
        echo "removed the group $GROUP"
    fi
}

if [ "$MODE" = install ]; then
    install_all
else
    uninstall_all
fi
