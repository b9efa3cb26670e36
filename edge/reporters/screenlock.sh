#!/bin/sh
# tsunagi screen-lock reporter for Linux desktops (GNOME).
#
# Reads the settings the network's rule is about (a password lock after at most 5 minutes idle):
#   org.gnome.desktop.session idle-delay        (seconds; 0 = never)
#   org.gnome.desktop.screensaver lock-enabled
#   org.gnome.desktop.screensaver lock-delay
# and posts them, as they are, to the facility's tsunagi appliance, which judges them.
#
#   screenlock.sh enrol https://box-1.tsunagi.internal CODE   once, as the desktop user, with a
#                                                             code from `tsunagi-edge terminal code`
#   screenlock.sh report                                      every 15 minutes (systemd user timer
#                                                             or cron), as the desktop user
#
# The appliance's URL and this terminal's reporter token are kept in
# ${XDG_CONFIG_HOME:-~/.config}/tsunagi/reporter (mode 600). The network's root must be trusted
# system-wide, or given in $TSUNAGI_CA.
set -eu

conf_dir=${XDG_CONFIG_HOME:-$HOME/.config}/tsunagi
conf=$conf_dir/reporter

curl_tls() {
    if [ -n "${TSUNAGI_CA:-}" ]; then
        curl --cacert "$TSUNAGI_CA" "$@"
    else
        curl "$@"
    fi
}

# JSON string contents: backslashes and quotes escaped, control characters dropped.
esc() {
    printf '%s' "$1" | tr -d '\000-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'
}

case "${1:-}" in
enrol)
    [ $# -eq 3 ] || { echo "usage: $0 enrol https://<appliance> <code>" >&2; exit 2; }
    url=${2%/}
    answer=$(curl_tls -sS --fail-with-body -H 'Content-Type: application/json' \
        --data "{\"code\":\"$(esc "$3")\"}" "$url/_tsunagi/posture") || {
        echo "enrolment refused: $answer" >&2
        exit 1
    }
    token=$(printf '%s' "$answer" | sed -n 's/.*"token":"\([0-9a-f]*\)".*/\1/p')
    [ -n "$token" ] || { echo "the appliance did not answer a token: $answer" >&2; exit 1; }
    mkdir -p "$conf_dir"
    chmod 700 "$conf_dir"
    umask 077
    printf 'url=%s\ntoken=%s\n' "$url" "$token" > "$conf.tmp"
    mv "$conf.tmp" "$conf"
    echo "enrolled: $answer"
    ;;
report)
    [ -r "$conf" ] || { echo "not enrolled: run $0 enrol https://<appliance> <code> first" >&2; exit 2; }
    url=$(sed -n 's/^url=//p' "$conf")
    token=$(sed -n 's/^token=//p' "$conf")
    get() { gsettings get "$1" "$2" 2>/dev/null || true; }
    idle=$(get org.gnome.desktop.session idle-delay)
    enabled=$(get org.gnome.desktop.screensaver lock-enabled)
    delay=$(get org.gnome.desktop.screensaver lock-delay)
    body=$(printf '{"os":"linux","host":"%s","idle_delay":"%s","lock_enabled":"%s","lock_delay":"%s"}' \
        "$(esc "$(hostname)")" "$(esc "$idle")" "$(esc "$enabled")" "$(esc "$delay")")
    answer=$(curl_tls -sS --fail-with-body -H 'Content-Type: application/json' \
        -H "Authorization: Bearer $token" --data "$body" "$url/_tsunagi/posture") || {
        echo "the report was refused: $answer" >&2
        exit 1
    }
    echo "$answer"
    ;;
*)
    echo "usage: $0 enrol https://<appliance> <code> | $0 report" >&2
    exit 2
    ;;
esac
