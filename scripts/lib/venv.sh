# shellcheck shell=bash
# Sourced by scripts/run and scripts/test: keeps .venv existing and the project
# installed in it. Needs ROOT (the repository root) to be set by the caller.
#
#   tt_ensure_venv        pip install -e .        (for scripts/run)
#   tt_ensure_venv dev    pip install -e ".[dev]" (for scripts/test)
#
# An install is stamped with pyproject.toml's SHA-256 (.venv/.tasktrail-stamp-*),
# so it is redone only when pyproject.toml changes. Set PYTHON to pick the
# interpreter that creates .venv (default: python3; tasktrail needs 3.11+).

tt_say() { printf '==> %s\n' "$*" >&2; }
tt_die() { printf '\nerror: %s\n\n' "$*" >&2; exit 1; }

tt_base_python() {
    local py=${PYTHON:-python3}
    command -v "$py" >/dev/null 2>&1 \
        || tt_die "$py not found. Install Python 3.11+ (Debian: apt-get install python3 python3-venv) or set PYTHON=/path/to/python3.11"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || tt_die "tasktrail needs Python 3.11+, but $py is $("$py" -V 2>&1). Set PYTHON=/path/to/python3.11 (or newer)"
    printf '%s\n' "$py"
}

tt_create_venv() {  # $1: extra `python -m venv` flags (e.g. --clear)
    local py venv=$ROOT/.venv
    py=$(tt_base_python)
    tt_say "creating .venv with $py ($("$py" -V 2>&1))"
    # shellcheck disable=SC2086
    if ! "$py" -m venv ${1:-} "$venv"; then
        rm -rf "$venv"  # a half-made venv (no pip) would fool the next run
        tt_die "could not create .venv. On Debian/Ubuntu: apt-get install python3-venv"
    fi
    printf '%s\n' "$ROOT" >"$venv/.tasktrail-root"
}

tt_ensure_venv() {  # $1: "" (the service) or "dev" (the service and the dev tools)
    local flavour=${1:-base} venv=$ROOT/.venv
    if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c '' 2>/dev/null; then
        tt_create_venv --clear
    elif [[ -f $venv/.tasktrail-root && $(<"$venv/.tasktrail-root") != "$ROOT" ]]; then
        # Scripts in a venv hard-code its path: a moved or copied checkout needs a new one.
        tt_say ".venv was made for $(<"$venv/.tasktrail-root"); recreating it for $ROOT"
        tt_create_venv --clear
    elif [[ ! -f $venv/.tasktrail-root ]]; then
        printf '%s\n' "$ROOT" >"$venv/.tasktrail-root"
    fi

    local hash
    hash=$("$venv/bin/python" -c \
        'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' \
        "$ROOT/pyproject.toml")
    local want=("$venv/.tasktrail-stamp-dev")  # a dev install also serves `run`
    [[ $flavour == dev ]] || want+=("$venv/.tasktrail-stamp-base")
    local stamp
    for stamp in "${want[@]}"; do
        if [[ -f $stamp && $(<"$stamp") == "$hash" && -x $venv/bin/tasktrail ]]; then
            return 0
        fi
    done

    local spec=. why="not installed yet"
    [[ $flavour == dev ]] && spec=".[dev]"
    if [[ -f $venv/.tasktrail-stamp-base ]]; then
        why="pyproject.toml changed since the last install"
        [[ $(<"$venv/.tasktrail-stamp-base") == "$hash" ]] && why="dev extras not installed yet"
    fi
    tt_say "installing tasktrail into .venv: pip install -e \"$spec\" ($why)"
    rm -f "$venv"/.tasktrail-stamp-*
    local pip=("$venv/bin/python" -m pip install --disable-pip-version-check -e "$spec")
    if [[ ${CI:-} == true ]]; then
        (cd "$ROOT" && "${pip[@]}") || tt_die "pip install -e \"$spec\" failed (see above)"
    else
        # Quiet unless it fails: the build backend is chatty even under --quiet.
        local log=$venv/.tasktrail-pip.log
        if ! (cd "$ROOT" && "${pip[@]}") >"$log" 2>&1; then
            cat "$log" >&2
            tt_die "pip install -e \"$spec\" failed (output above, kept in $log)"
        fi
    fi
    printf '%s\n' "$hash" >"$venv/.tasktrail-stamp-base"
    [[ $flavour == dev ]] && printf '%s\n' "$hash" >"$venv/.tasktrail-stamp-dev"
    return 0
}
