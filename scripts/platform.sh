# Platform checks shared by scripts/setup and scripts/install.sh (sourced, not run).
#
#   kioskd_apt_packages           prints the apt packages scripts/setup installs, less the browser
#   kioskd_refuse_32bit NAME      exit 1 at once on 32-bit ARM, saying why
#   kioskd_lgpio_package          prints python3-lgpio when the apt archive has it (Raspberry Pi OS)
#   kioskd_venv_gpio VENV NAME    let VENV see the system's lgpio, then say which GPIO it has

KIOSKD_DT_MODEL=${KIOSKD_DT_MODEL:-/proc/device-tree/model}  # a test points this elsewhere

# 32-bit Raspberry Pi OS (armhf) is refused rather than half-supported: PyPI has no 32-bit
# ARM wheels for seven of kioskd's native dependencies, so each would build from source.
# A 64-bit kernel under a 32-bit userland (Pi OS 32-bit on a Pi 4) still says aarch64 in
# uname, hence the dpkg architecture first.
kioskd_refuse_32bit() {
    local name=$1 arch machine
    arch=$(dpkg --print-architecture 2>/dev/null || true)
    machine=$(uname -m)
    case "${arch:-$machine}" in
        armhf|armel|arm|armv6l|armv7l|armv8l) ;;
        *) return 0 ;;
    esac
    cat >&2 <<EOF
$name: 32-bit ARM ($machine, ${arch:-no dpkg}) is not supported: install the 64-bit (arm64)
Raspberry Pi OS Bookworm; it runs on the Pi 3, 4, 400, 5, Zero 2 W and CM3/CM4/CM5.
Why: PyPI has no 32-bit ARM wheels for msgspec, numpy, samplerate, soxr, webrtcvad-wheels,
pywebrtc-audio or pyaudio, so every one of them would build from source (C++, cmake, meson)
on the Pi, and that build is neither tested nor supported here.
Nothing was changed.
EOF
    exit 1
}

kioskd_apt_packages() {
    echo python3-venv python3-dev gcc portaudio19-dev libasound2-plugins espeak-ng sox systemd redis-server
}

kioskd_lgpio_package() {
    if apt-cache show python3-lgpio >/dev/null 2>&1; then
        echo python3-lgpio
    fi
}

# On aarch64 PyPI's "lgpio" is a placeholder; the working one is Raspberry Pi OS's
# python3-lgpio. When the system interpreter can import it, the venv includes the system
# site-packages (as Raspberry Pi's own documentation advises for GPIO); an existing venv
# is switched over in its pyvenv.cfg. Prints one line saying which GPIO the venv has.
kioskd_venv_gpio() {
    local venv=$1 name=$2 system_python
    system_python=$(sed -n 's/^executable *= *//p' "$venv/pyvenv.cfg")
    if [[ -x $system_python ]] && "$system_python" -c 'import lgpio' 2>/dev/null; then
        sed -i 's/^include-system-site-packages *= *false/include-system-site-packages = true/' "$venv/pyvenv.cfg"
    fi
    if "$venv/bin/python" -c 'import lgpio; lgpio.gpiochip_open' 2>/dev/null; then
        echo "$name: GPIO: lgpio from the system ($("$venv/bin/python" -c 'import lgpio; print(lgpio.__file__)'))"
    elif grep -qs 'Raspberry Pi' "$KIOSKD_DT_MODEL"; then
        echo "$name: warning: no working lgpio in $venv: the button and the light will report" \
            "\"no working GPIO pin factory\". Install it with: sudo apt install python3-lgpio," \
            "then run $name again." >&2
    else
        echo "$name: GPIO: none here (not a Raspberry Pi); the tests use gpiozero's mock pins"
    fi
}
