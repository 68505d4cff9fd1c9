# Shared by the stub commands: records each call as one line "name arg arg..." in $STUB_LOG,
# so tests can assert what the boot script ran (and that no secret ever was an argument).
stub_name=${0##*/}
record() {
  printf '%s' "$stub_name" >>"${STUB_LOG:?STUB_LOG must be set}"
  printf ' %s' "$@" >>"$STUB_LOG"
  printf '\n' >>"$STUB_LOG"
}
record "$@"
# "Installs" packages by linking the stub of the command each provides into $STUB_INSTALL_DIR
# (a PATH entry), so a script that checks before installing finds the command afterwards.
# $STUB_ALL_DIR holds every stub even when the PATH copy leaves some out on purpose.
stub_install() {
  local arg cmd cmds from=${STUB_ALL_DIR:-${BASH_SOURCE[0]%/*}}
  for arg in "$@"; do
    case $arg in
      docker.io | docker) cmds=docker ;;
      nginx | certbot | haproxy) cmds=$arg ;;
      awscli | awscli-2 | aws-cli) cmds=aws ;;
      mysql-server | mariadb105-server) cmds="mysqld mysql mysqladmin" ;;
      mongodb-org) cmds="mongod mongosh" ;;
      amazon-efs-utils) cmds=mount.efs ;;
      nfs-common) cmds=mount.nfs4 ;;
      *) continue ;;
    esac
    [ -n "${STUB_INSTALL_DIR:-}" ] || continue
    ln -sf "$from/_lib.sh" "$STUB_INSTALL_DIR/_lib.sh"
    for cmd in $cmds; do ln -sf "$from/$cmd" "$STUB_INSTALL_DIR/$cmd"; done
  done
}
# A directory where stubs keep state between calls (formatted disks, mounts, containers),
# beside the call log.
stub_state() {
  local dir=${STUB_LOG%/*}/stub-state
  mkdir -p "$dir"
  printf '%s' "$dir"
}
# A file name for a path: /dev/nvme1n1 -> _dev_nvme1n1.
stub_key() { printf '%s' "${1//\//_}"; }
