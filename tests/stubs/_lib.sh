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
# What containers would get in their environment, one NAME=VALUE a line, in container-env.log
# beside the call log: the values of `-e`/`--env`/`--env-add` (a bare NAME takes the CLI's own
# variable, as docker does), the files of `--env-file`, and compose's `environment:` and
# `env_file:`. Tests assert no secret value lands here (`docker inspect` would show it).
stub_env_log() { printf '%s\n' "$1" >>"${STUB_LOG%/*}/container-env.log"; }
stub_env_file() {
  local f=$1
  [ -e "$f" ] || f="${IAC_ROOT:-}$f"
  if [ -r "$f" ]; then cat "$f" >>"${STUB_LOG%/*}/container-env.log"; else stub_env_log "<unreadable env file $1>"; fi
}
stub_env_value() {
  if [[ $1 == *=* ]]; then stub_env_log "$1"
  elif [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then stub_env_log "$1=${!1-}"
  fi
}
record_container_env() {
  local prev='' a
  for a in "$@"; do
    case $prev in
      -e | --env | --env-add) stub_env_value "$a" ;;
      --env-file) stub_env_file "$a" ;;
    esac
    case $a in
      --env=* | --env-add=*) stub_env_value "${a#*=}" ;;
      --env-file=*) stub_env_file "${a#*=}" ;;
    esac
    prev=$a
  done
}
# The `environment:` and `env_file:` entries of compose file $1 (block or list style).
record_compose_env() {
  local line indent='' key='' cur rest
  while IFS= read -r line || [ -n "$line" ]; do
    [[ $line =~ ^([[:space:]]*)(.*)$ ]] || continue
    cur=${#BASH_REMATCH[1]} rest=${BASH_REMATCH[2]}
    [ -n "$rest" ] && [ "${rest#\#}" = "$rest" ] || continue
    if [ -n "$key" ] && [ "$cur" -gt "$indent" ]; then
      rest=${rest#- }
      rest=${rest//\"/}
      if [ "$key" = env_file ]; then stub_env_file "$rest"
      elif [[ $rest == *": "* ]]; then stub_env_log "${rest%%: *}=${rest#*: }"
      else stub_env_value "$rest"; fi
      continue
    fi
    key=''
    case $rest in
      environment:) key=environment indent=$cur ;;
      env_file:) key=env_file indent=$cur ;;
      "env_file: "*) rest=${rest#env_file: }; stub_env_file "${rest//\"/}" ;;
    esac
  done <"$1"
}
