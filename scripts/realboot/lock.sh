# shellcheck shell=bash
# Serialises real-boot runs on this machine (the test command, the demo): holds the lock on fd 9
# until the calling script exits.
IAC_RB_LOCK="${IAC_REALBOOT_LOCK:-/tmp/iac-realboot.lock}"
rb_lock() {
  exec 9>"$IAC_RB_LOCK"
  if ! flock -n 9; then
    printf '%s realboot: another real-boot run holds %s; waiting for it\n' "$(date -u +%T)" "$IAC_RB_LOCK" >&2
    flock 9
  fi
}
