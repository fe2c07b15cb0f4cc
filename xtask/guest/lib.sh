# Helpers for guest job scripts (see xtask/src/vm.rs); sourced by bash before
# every job. $GUEST_TMP is a tmpfs directory with a static busybox and its
# applets in $GUEST_TMP/bin (set up by run.sh).

# guest_progress MSG...: writes MSG to the kernel log, so it shows on the
# console the host watches (feeding its stall watchdog) without any 9p access.
guest_progress() {
    echo "scx-hints: $*" >/dev/kmsg
}

# guest_stage PROGRAM...: copies programs (names on PATH, or paths) and the
# shared libraries they need into $GUEST_TMP, so that they run without
# touching the 9p root. Run them afterwards as $GUEST_TMP/bin/NAME. A dynamic
# program is started through a copy of the ELF loader with --library-path
# (so its /proc/self/exe is the loader); $GUEST_TMP/bin/NAME is then a small
# busybox sh script that execs it.
guest_stage() {
    local prog path name line lib loader
    mkdir -p "$GUEST_TMP/bin" "$GUEST_TMP/lib" "$GUEST_TMP/prog" || return
    for prog in "$@"; do
        path=$(command -v "$prog") || {
            echo "guest_stage: $prog not found" >&2
            return 1
        }
        name=${path##*/}
        # The name may be a busybox applet link: never write through it.
        rm -f "$GUEST_TMP/bin/$name"
        if ! ldd "$path" >/dev/null 2>&1; then
            cp "$path" "$GUEST_TMP/bin/$name" || return
            continue
        fi
        cp "$path" "$GUEST_TMP/prog/$name" || return
        loader=
        while read -r line; do
            set -- $line
            if [ "$2" = "=>" ] && [ "${3#/}" != "$3" ]; then
                lib=$3
            elif [ "${1#/}" != "$1" ]; then
                lib=$1
                loader=$GUEST_TMP/lib/${1##*/}
            else
                continue
            fi
            [ -e "$GUEST_TMP/lib/${lib##*/}" ] || cp -L "$lib" "$GUEST_TMP/lib/" || return
        done < <(ldd "$path")
        if [ -z "$loader" ]; then
            echo "guest_stage: no ELF loader found for $path" >&2
            return 1
        fi
        printf '#!%s sh\nexec %s --argv0 "$0" --library-path %s %s "$@"\n' \
            "$GUEST_TMP/bin/busybox" "$loader" "$GUEST_TMP/lib" "$GUEST_TMP/prog/$name" \
            >"$GUEST_TMP/bin/$name" && chmod +x "$GUEST_TMP/bin/$name" || return
    done
}

# Also for bash scripts the job starts.
export -f guest_progress guest_stage
