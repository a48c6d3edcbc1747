# Shared helpers for the launch scripts (sourced, not run). Bash 4+.
#   DRY_RUN=1 (or --dry-run on the scripts) prints each command, shell-quoted, instead of running it.

LR2VQ_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN="${DRY_RUN:-0}"

# run CMD ARGS...: runs the command, or prints it as "+ cmd args" in dry-run mode.
run() {
  if [[ "${DRY_RUN}" == "1" ]]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# die MESSAGE: prints to stderr and exits 2.
die() {
  echo "error: $*" >&2
  exit 2
}

# quote ARGS...: one shell-quoted string (for commands that run remotely through ssh/srun bash -c).
quote() {
  local out="" a
  for a in "$@"; do
    out+="$(printf '%q' "${a}") "
  done
  printf '%s' "${out% }"
}
