#!/usr/bin/env bash
# Install or upgrade kioskd on Raspberry Pi OS Bookworm. Safe to run again (idempotent).
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/install.sh [--prefix DIR] [--no-apt] [--help]

Installs kioskd from this repository:
  - apt packages: python3-venv python3-dev build-essential portaudio19-dev libasound2-plugins
    (and python3-lgpio when the archive has it)
  - system user "kioskd" (groups: audio, and gpio when that group exists)
  - a virtualenv at /opt/kioskd/venv with kioskd installed into it
  - /etc/kioskd/config.toml from the repository's config.toml, only if absent (never overwritten)
  - /etc/kioskd/token (mode 0600, owned by kioskd): empty, or $KIOSKD_TOKEN when set
  - /usr/local/bin/kioskd: a symlink to the virtualenv's kioskd (so `kioskd ctl status` works)
  - the invoking sudo user ($SUDO_USER) joins group "kioskd": `kioskd ctl` without sudo
  - /etc/systemd/system/kioskd.service, then daemon-reload, enable, and restart if running
  - /etc/systemd/system/kioskd-backend.service and kioskd-backend@.service (the signing
    backend, for the machine that runs it: installed, not enabled)

options:
  --prefix DIR  install under DIR (DIR/opt/kioskd, DIR/etc/…) without touching the system:
                no apt, no useradd, no systemctl; chown only when the user exists and we are root
  --no-apt      skip the apt packages
  -h, --help    show this help

environment:
  KIOSKD_TOKEN  this kiosk's backend token, written to /etc/kioskd/token (never printed)
  PYTHON        the interpreter that creates the virtualenv (default: python3)
  PIP_*         passed through to pip (e.g. PIP_FIND_LINKS, PIP_INDEX_URL)
EOF
}

SERVICE_USER=kioskd
APT_PACKAGES=(python3-venv python3-dev build-essential portaudio19-dev libasound2-plugins)
APT_OPTIONAL=(python3-lgpio)
PYTHON=${PYTHON:-python3}
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$SRC/scripts/platform.sh"
kioskd_refuse_32bit install.sh

PREFIX=""
DO_APT=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --prefix)
            [[ $# -ge 2 && -n "$2" ]] || { echo "install.sh: --prefix needs a directory" >&2; exit 2; }
            PREFIX=$(mkdir -p "$2" && cd "$2" && pwd)
            shift 2
            ;;
        --prefix=*)
            PREFIX=$(mkdir -p "${1#--prefix=}" && cd "${1#--prefix=}" && pwd)
            shift
            ;;
        --no-apt) DO_APT=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

OPT_DIR=$PREFIX/opt/kioskd
VENV=$OPT_DIR/venv
ETC_DIR=$PREFIX/etc/kioskd
UNIT_DIR=$PREFIX/etc/systemd/system
BIN_DIR=$PREFIX/usr/local/bin
IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1

say() { printf 'install.sh: %s\n' "$*"; }
skip() { printf 'install.sh: skipped: %s\n' "$*"; }
user_exists() { id -u "$SERVICE_USER" >/dev/null 2>&1; }
# chown only where it can work: as root, for an existing user.
own() {
    if [[ $IS_ROOT -eq 1 ]] && user_exists; then
        chown "$@"
    else
        skip "chown $* (not root or no user $SERVICE_USER)"
    fi
}

if [[ -z $PREFIX && $IS_ROOT -ne 1 ]]; then
    echo "install.sh: run as root (sudo), or use --prefix DIR" >&2
    exit 1
fi

# ------------------------------------------------------------------ packages
if [[ -n $PREFIX ]]; then
    skip "apt packages (--prefix)"
elif [[ $DO_APT -eq 0 ]]; then
    skip "apt packages (--no-apt)"
else
    say "installing apt packages: ${APT_PACKAGES[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}"
    for pkg in "${APT_OPTIONAL[@]}"; do
        if apt-cache show "$pkg" >/dev/null 2>&1; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg"
        else
            skip "$pkg (not in this archive)"
        fi
    done
fi

# ------------------------------------------------------------------ user
if [[ -n $PREFIX ]]; then
    skip "useradd $SERVICE_USER (--prefix)"
else
    if ! user_exists; then
        say "creating system user $SERVICE_USER"
        useradd --system --user-group --home-dir /var/lib/kioskd --no-create-home \
            --shell /usr/sbin/nologin "$SERVICE_USER"
    fi
    for group in audio gpio; do
        if getent group "$group" >/dev/null; then
            usermod -a -G "$group" "$SERVICE_USER"
        else
            skip "group $group (does not exist here)"
        fi
    done
    # The control socket is for root and the kioskd group (mode 0660): let the operator in.
    if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
        usermod -a -G "$SERVICE_USER" "$SUDO_USER"
        say "added $SUDO_USER to group $SERVICE_USER: log in again, then \`kioskd ctl status\` works without sudo"
    fi
fi

# ------------------------------------------------------------------ virtualenv
install -d -m 0755 "$OPT_DIR" "$ETC_DIR" "$UNIT_DIR"
if [[ ! -x $VENV/bin/python ]]; then
    say "creating virtualenv $VENV"
    # System site-packages: Raspberry Pi OS ships lgpio (gpiozero's pin factory) as python3-lgpio
    # (PyPI's aarch64 lgpio is a placeholder); kioskd_venv_gpio below says whether it works.
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
say "installing kioskd from $SRC into $VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade "$SRC"
install -d -m 0755 "$BIN_DIR"
ln -sfn "$VENV/bin/kioskd" "$BIN_DIR/kioskd"
say "linked $BIN_DIR/kioskd -> $VENV/bin/kioskd"

# ------------------------------------------------------------------ config and token
if [[ -e $ETC_DIR/config.toml ]]; then
    say "kept existing $ETC_DIR/config.toml"
elif [[ -f $SRC/config.toml ]]; then
    install -m 0640 "$SRC/config.toml" "$ETC_DIR/config.toml"
    own "root:$SERVICE_USER" "$ETC_DIR/config.toml"
    say "installed $ETC_DIR/config.toml: edit it (agent.agent_id, backend.url)"
else
    skip "config.toml (not in $SRC)"
fi

TOKEN_FILE=$ETC_DIR/token
# The token only ever goes into a new file created 0600 (mktemp) and owned before it is
# filled, then renamed over the old one: an existing file with a loose mode, or a
# descriptor someone holds on it, never sees the new token.
new_token_file() {
    local tmp
    tmp=$(mktemp "$ETC_DIR/.token.XXXXXX")
    chmod 0600 "$tmp"
    own "$SERVICE_USER:$SERVICE_USER" "$tmp"
    printf '%s' "$1" > "$tmp"
    mv -f "$tmp" "$TOKEN_FILE"
}
if [[ -n ${KIOSKD_TOKEN:-} ]]; then
    new_token_file "$KIOSKD_TOKEN"$'\n'
    say "wrote $TOKEN_FILE from \$KIOSKD_TOKEN"
elif [[ ! -e $TOKEN_FILE ]]; then
    new_token_file ""
    say "created empty $TOKEN_FILE: put this kiosk's backend token in it"
else
    chmod 0600 "$TOKEN_FILE"
    own "$SERVICE_USER:$SERVICE_USER" "$TOKEN_FILE"
    say "kept existing $TOKEN_FILE (mode 0600)"
fi

# ------------------------------------------------------------------ systemd
install -m 0644 "$SRC/systemd/kioskd.service" "$UNIT_DIR/kioskd.service"
say "installed $UNIT_DIR/kioskd.service"
for unit in kioskd-backend.service kioskd-backend@.service; do
    install -m 0644 "$SRC/systemd/$unit" "$UNIT_DIR/$unit"
done
say "installed $UNIT_DIR/kioskd-backend.service (not enabled; for the signing backend's machine: systemctl enable --now kioskd-backend)"
if [[ -n $PREFIX ]]; then
    skip "systemctl daemon-reload / enable / try-restart (--prefix)"
else
    systemctl daemon-reload
    systemctl enable kioskd.service
    systemctl try-restart kioskd.service
    say "enabled kioskd.service; start it with: systemctl start kioskd"
fi
kioskd_venv_gpio "$VENV" install.sh
say "operators: sudo usermod -aG $SERVICE_USER USER lets USER run \`kioskd ctl\` (the socket is for root and group $SERVICE_USER)"
say "next: edit $ETC_DIR/config.toml, then \`kioskd check-config --online --config $ETC_DIR/config.toml\`"
say "done: $("$VENV/bin/kioskd" --version)"
