#!/bin/bash
# Install netplumb from this checkout as a systemd service, or remove it.
# Run as root on Debian; `deploy/install.sh --help` explains.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: deploy/install.sh [--root DIR]
       deploy/install.sh --uninstall [--purge] [--root DIR]

Installs netplumb from this checkout (as root):
  /opt/netplumb/venv                    a virtualenv with netplumb and its pinned
                                        dependencies (a normal install, not editable)
  /opt/netplumb/README.md, docs/        the documentation the unit points to
  /usr/local/bin/netplumbd, netplumb, pipework
                                        links into the virtualenv
  /etc/systemd/system/netplumbd.service the unit (then 'systemctl daemon-reload'
                                        if systemd runs, and a restart of a running
                                        netplumbd, so an upgrade takes effect)
  /etc/netplumb/netplumbd.toml          the commented default configuration, only if
                                        there is none (yours is never overwritten)
  group netplumb                        a system group: its members may use the socket

Running it again upgrades the installation to this checkout.

  --uninstall  remove what the install made; keeps the configuration, the state
               (/var/lib/netplumb) and the group, so a reinstall carries on
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
  make uninstall                          # deploy/install.sh --uninstall
  deploy/install.sh --uninstall --purge   # everything, configuration and state too
  deploy/install.sh --root /tmp/np-root   # a scratch installation

environment: PYTHON (default /usr/bin/python3; 3.11 or newer, installed outside
/root, /home and /tmp, which the unit hides) builds the virtualenv.
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

    mkdirs "$OPT"
    # The virtualenv: kept across upgrades, made again if its Python changed.
    local want have
    want=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    have=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
    if [ "$have" != "$want" ]; then
        echo "making the virtualenv $VENV (Python $want)"
        "$python" -m venv --clear "$VENV"
    fi

    # Built from a copy, so that the build leaves nothing in the checkout
    # (setuptools writes build/ and *.egg-info next to the sources).
    local tmp
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064  # expand $tmp now
    trap "rm -rf '$tmp'" EXIT
    mkdir "$tmp/src"
    tar -C "$SRC" --exclude=__pycache__ --exclude='*.pyc' -cf - pyproject.toml README.md agent cli proto |
        tar -C "$tmp/src" -xf -
    echo "installing netplumb from $SRC and its pinned dependencies into $VENV"
    # pip always reinstalls a project given as a directory (the same version
    # number may be another checkout) and brings the dependencies to its pins.
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$tmp/src"

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

    # The configuration in use, read by this version (an upgrade may meet a
    # key it does not take): a running netplumbd is restarted only on a good one.
    "$VENV/bin/netplumbd" --check-config --config "$CONFIG" >/dev/null ||
        die "netplumb is installed, but $CONFIG does not suit it (see above): fix it," \
            "check it with 'netplumbd --check-config --config $CONFIG', then (re)start netplumbd"
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
}

uninstall_all() {
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
        local dirs=() i
        [ ! -f "$MADE" ] || mapfile -t dirs <"$MADE"
        rm -rf "$OPT"
        echo "removed $OPT and the links in $BIN"
        for ((i = ${#dirs[@]} - 1; i >= 0; i--)); do
            rmdir "${dirs[i]}" 2>/dev/null || true # gone, or holds other files
        done
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
