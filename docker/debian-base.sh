#!/usr/bin/env bash
# The Debian stand-in for the pinned python base; the script ships in the package
# (mlscale/containers/debian-base.sh) so that `mlscale build-image` has it too.
exec bash "$(dirname "$0")/../mlscale/containers/debian-base.sh" "$@"
