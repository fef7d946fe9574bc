#!/usr/bin/env bash
# Runs one switchyard step for a composite action: every non-empty
# SWITCHYARD_IN_<NAME> becomes SWITCHYARD_<NAME> (an empty input means "not
# given", so the step's own default applies), SWITCHYARD_ARGS adds extra
# arguments (split on blanks), and the step's own GITHUB_OUTPUT lines become
# the action's outputs.
set -euo pipefail

while IFS= read -r name; do
  value=${!name}
  unset "$name"
  if [[ -n $value ]]; then
    export "SWITCHYARD_${name#SWITCHYARD_IN_}=$value"
  fi
done < <(compgen -e | grep '^SWITCHYARD_IN_' || true)

read -r -a extra <<<"${SWITCHYARD_ARGS:-}"
unset SWITCHYARD_ARGS
printf '$ %s\n' "$*${extra[*]:+ ${extra[*]}}" >&2
exec "$@" "${extra[@]}"
