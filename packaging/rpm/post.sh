# lightningstream post-install scriptlet, plain POSIX shell ($1: 1 on install, 2 or more on upgrade). The units
# are neither enabled nor started: the packaged configuration is all comments.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
