# lightningstream post-uninstall scriptlet ($1: 0 on erase, 1 or more on upgrade): forget removed units; after an
# upgrade, restart the running instances so that they use the new binary.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart lightningstream.service 'lightningstream@*.service' >/dev/null 2>&1 || :
    fi
fi
exit 0
