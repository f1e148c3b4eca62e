# lightningstream pre-uninstall scriptlet ($1: 0 on erase, 1 or more on upgrade): on erase, stop and disable the
# units, plain and template instances.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop lightningstream.service 'lightningstream@*.service' >/dev/null 2>&1 || :
    fi
    for link in /etc/systemd/system/*.wants/lightningstream.service \
        /etc/systemd/system/*.wants/lightningstream@*.service; do
        [ -L "$link" ] || continue
        systemctl --no-reload disable "${link##*/}" >/dev/null 2>&1 || rm -f "$link"
    done
fi
exit 0
